package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// WriteTable prints results as an aligned table: latency percentiles,
// throughput at the run's concurrency, on fnrun rows the ratio of their
// p50 to the bare twin's and to the minimal client's, on every row but the
// floor's the ratio of its time to result to the floor's, and notes (pool
// misses, failed calls). Text columns are aligned left, figures right.
func WriteTable(w io.Writer, results []*Result) error {
	rows := [][]string{{"DRIVER", "MODE", "CLIENT", "CALLS", "CONC", "P50", "RESULT", "P90", "P99", "MEAN", "CALLS/S", "P50/BARE", "P50/MIN", "RESULT/RUNC", "NOTE"}}
	ratio := func(a, b time.Duration) string {
		if a <= 0 || b <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", float64(a)/float64(b))
	}
	for _, r := range results {
		bare, minimal, floor := "-", "-", "-"
		if r.Client == Fnrun {
			if b := twin(results, r, Bare); b != nil {
				bare = ratio(r.Percentile(50), b.Percentile(50))
			}
			if m := twin(results, r, Minimal); m != nil {
				minimal = ratio(r.Percentile(50), m.Percentile(50))
			}
		}
		if f := floorOf(results, r); f != nil && r.Client != Runc {
			floor = ratio(r.ResultPercentile(50), f.ResultPercentile(50))
		}
		note := r.Note
		if r.Errors > 0 {
			e := fmt.Sprintf("%d failed call(s)", r.Errors)
			if note != "" {
				e = note + "; " + e
			}
			note = e
		}
		if note == "" {
			note = "-"
		}
		rows = append(rows, []string{r.Driver, r.Mode, r.Client,
			fmt.Sprint(len(r.Latencies)), fmt.Sprint(r.Concurrency),
			ms(r.Percentile(50)), ms(r.ResultPercentile(50)), ms(r.Percentile(90)), ms(r.Percentile(99)), ms(r.Mean()),
			fmt.Sprintf("%.1f", r.Throughput()), bare, minimal, floor, note})
	}
	right := func(col int) bool { return col >= 3 && col <= 13 }
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, cell := range row {
			if n := utf8.RuneCountInString(cell); n > widths[i] {
				widths[i] = n
			}
		}
	}
	var b strings.Builder
	for _, row := range rows {
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			switch {
			case i == len(row)-1:
				b.WriteString(cell) // no trailing blanks
			case right(i):
				b.WriteString(pad + cell + "  ")
			default:
				b.WriteString(cell + pad + "  ")
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// FailureNotes says, for each result with failed calls, how many and the
// first error: the details the table leaves out.
func FailureNotes(results []*Result) []string {
	var out []string
	for _, r := range results {
		if r.Errors > 0 {
			out = append(out, fmt.Sprintf("%s: %d failed call(s) of %d, not timed; the first: %v", r.Variant, r.Errors, r.Errors+len(r.Latencies), r.FirstError))
		}
	}
	return out
}

// twin is the result of client for the same driver and mode as r.
func twin(results []*Result, r *Result, client string) *Result {
	for _, b := range results {
		if b.Driver == r.Driver && b.Mode == r.Mode && b.Client == client {
			return b
		}
	}
	return nil
}

// floorOf is the runc result of r's mode, of whichever driver measured it:
// runc is the floor of every driver.
func floorOf(results []*Result, r *Result) *Result {
	for _, b := range results {
		if b.Mode == r.Mode && b.Client == Runc {
			return b
		}
	}
	return nil
}

// ms prints a latency in milliseconds.
func ms(d time.Duration) string {
	v := float64(d.Microseconds()) / 1000
	switch {
	case v < 10:
		return fmt.Sprintf("%.2fms", v)
	case v < 1000:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.0fms", v)
}

// Legend explains the modes under the table.
const Legend = `cold:   a new container per call running 'true' (validate, create, start, wait, remove), with a network of its own.
pooled: the same, joining a running holder's network namespace (fnrun: the driver's pre-fork pool, sized to the
        concurrency; bare: one holder per worker started by the benchmark), so no network is built per call.
warm:   a hot container per worker, frozen between calls. A call unfreezes it, writes one line to its stdin, reads
        the echo from its stdout and freezes it again: thaw + one request round trip + freeze, no container created.
bare:   the same daemon steps with go-dockerclient / the containerd client directly, with the container options or
        OCI spec (and containerd runtime) the fnrun driver generated. P50/BARE is fnrun's p50 over the bare client's. Latencies are per call;
        CALLS/S is the throughput with CONC calls in flight.
minimal: (containerd) the bare client asking for the least: containerd's default spec for the image, uid 1000, no new
        privileges, the same network, containerd's runc shim; no /etc files, no init, no seccomp profile or capability
        set of the driver's, nor its shim. P50/MIN is fnrun's p50 over it.
runc:   the floor: 'runc run' of the image's root filesystem with the containerd driver's spec, no daemon, no network
        beyond loopback, no /etc files. RESULT is the p50 from the start of a call to its result, before the clean-up
        the other columns include; RESULT/RUNC compares it with the floor's.`

// WriteChart writes a box plot of the latencies of every result to path;
// the format follows the extension (.png, .svg, .pdf...). The latency axis
// is logarithmic, so warm calls (milliseconds) and cold ones (hundreds of
// milliseconds) both show.
func WriteChart(path, title string, results []*Result) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = "latency per call (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	p.Y.Tick.Label.Font.Size = vg.Points(9)
	p.X.Tick.Label.Font.Size = vg.Points(8)

	names := make([]string, 0, 2*len(results))
	add := func(lat []time.Duration, c color.Color, name string) error {
		vals := make(plotter.Values, 0, len(lat))
		for _, l := range lat {
			v := float64(l.Microseconds()) / 1000
			if v <= 0 {
				v = 0.001 // a log scale has no zero
			}
			vals = append(vals, v)
		}
		if len(vals) == 0 {
			return nil
		}
		box, err := plotter.NewBoxPlot(vg.Points(18), float64(len(names)), vals)
		if err != nil {
			return err
		}
		box.FillColor = c
		p.Add(box)
		names = append(names, name)
		return nil
	}
	for _, r := range results {
		name := strings.Join([]string{r.Driver, r.Mode, r.Client}, "\n")
		// The time to the result, beside the whole call, where they differ.
		if !slices.Equal(r.ToResult, r.Latencies) {
			if err := add(r.ToResult, lighter(fill(r.Variant)), name+"\nto result"); err != nil {
				return err
			}
		}
		if err := add(r.Latencies, fill(r.Variant), name); err != nil {
			return err
		}
	}
	// Room above and below the boxes, so none touches the frame.
	if len(names) > 0 {
		p.Y.Min, p.Y.Max = p.Y.Min*0.8, p.Y.Max*1.25
	}
	p.NominalX(names...)
	p.Add(plotter.NewGrid())
	width := vg.Length(len(names))*0.8*vg.Inch + 1.5*vg.Inch
	if width < 5*vg.Inch {
		width = 5 * vg.Inch
	}
	return p.Save(width, 4.5*vg.Inch, path)
}

// fill colours fnrun, bare, minimal and runc boxes apart, a shade per mode.
func fill(v Variant) color.RGBA {
	shade := map[string]uint8{Cold: 0, Pooled: 40, Warm: 80}[v.Mode]
	switch v.Client {
	case Fnrun:
		return color.RGBA{R: 40 + shade, G: 110 + shade, B: 200, A: 255}
	case Runc:
		return color.RGBA{R: 90 + shade, G: 160 + shade, B: 90 + shade, A: 255}
	case Minimal:
		return color.RGBA{R: 150 + shade/2, G: 90 + shade, B: 170, A: 255}
	}
	return color.RGBA{R: 200, G: 120 + shade, B: 40 + shade, A: 255}
}

// lighter is c halfway to white.
func lighter(c color.RGBA) color.RGBA {
	return color.RGBA{R: c.R/2 + 128, G: c.G/2 + 128, B: c.B/2 + 128, A: 255}
}

// logTicks labels a logarithmic axis at 1, 2 and 5 times the powers of
// ten, with unlabelled minor ticks between; a range too narrow for two
// labels gets its ends labelled.
type logTicks struct{}

func (logTicks) Ticks(min, max float64) []plot.Tick {
	if min <= 0 || max <= min {
		return nil
	}
	var ticks []plot.Tick
	labelled := 0
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		p := math.Pow(10, e)
		for m := 1; m <= 9; m++ {
			v := float64(m) * p
			if v < min || v > max {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconv.FormatFloat(v, 'g', -1, 64)
				labelled++
			}
			ticks = append(ticks, t)
		}
	}
	if labelled < 2 {
		round := func(v float64) float64 {
			p := math.Pow(10, math.Floor(math.Log10(v))-1)
			return math.Round(v/p) * p
		}
		for _, v := range []float64{round(min), round(max)} {
			if v >= min && v <= max {
				ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', 3, 64)})
			}
		}
	}
	return ticks
}
