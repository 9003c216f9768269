package drivers

import "strings"

// SplitCommand splits a command line into arguments with POSIX shell
// quoting rules: single quotes keep everything literally, double quotes
// keep everything but a backslash before $ ` " \ or a newline, and a
// backslash outside quotes escapes the next character. Quoted empty
// strings are kept as arguments. No expansion of variables, globs or
// substitutions is done: the command is not run by a shell.
//
// An unterminated quote or a trailing backslash is an error wrapping
// ErrInvalidTask.
func SplitCommand(cmd string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inArg   bool // cur holds an argument, possibly an empty quoted one
		inQuote rune // 0, '\'' or '"'
	)
	runes := []rune(cmd)
	for i := 0; i < len(runes); i++ {
		r := runes[i]
		switch inQuote {
		case '\'':
			if r == '\'' {
				inQuote = 0
			} else {
				cur.WriteRune(r)
			}
			continue
		case '"':
			switch r {
			case '"':
				inQuote = 0
			case '\\':
				if i+1 < len(runes) {
					next := runes[i+1]
					switch next {
					case '$', '`', '"', '\\':
						cur.WriteRune(next)
						i++
						continue
					case '\n':
						i++
						continue
					}
				}
				cur.WriteRune(r)
			default:
				cur.WriteRune(r)
			}
			continue
		}
		switch r {
		case '\'', '"':
			inQuote = r
			inArg = true
		case '\\':
			if i+1 >= len(runes) {
				return nil, InvalidTaskf("command %q ends with a lone backslash", cmd)
			}
			i++
			if runes[i] != '\n' { // backslash-newline is a line continuation
				cur.WriteRune(runes[i])
				inArg = true
			}
		case ' ', '\t', '\n', '\r':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if inQuote != 0 {
		return nil, InvalidTaskf("command %q has an unterminated %c quote", cmd, inQuote)
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

// QuoteCommand joins args into a command line that SplitCommand turns back
// into args.
func QuoteCommand(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = quoteArg(a)
	}
	return strings.Join(quoted, " ")
}

func quoteArg(a string) string {
	if a == "" {
		return "''"
	}
	if !strings.ContainsAny(a, " \t\n\r'\"\\$`") {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}
