package clock

import (
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewFake(start)
	short, long := c.NewTimer(time.Second), c.NewTimer(time.Minute)
	stopped := c.NewTimer(time.Second)
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop: want true once, then false")
	}
	c.BlockUntil(2)
	c.Advance(time.Second)
	select {
	case at := <-short.C():
		if !at.Equal(start.Add(time.Second)) {
			t.Fatalf("fired at %v", at)
		}
	default:
		t.Fatal("a due timer did not fire")
	}
	select {
	case <-long.C():
		t.Fatal("a timer fired early")
	case <-stopped.C():
		t.Fatal("a stopped timer fired")
	default:
	}
	if got := c.Now(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("Now %v", got)
	}
	select {
	case <-c.NewTimer(0).C():
	default:
		t.Fatal("a zero timer has not fired")
	}
}

func TestWall(t *testing.T) {
	tm := Wall.NewTimer(time.Millisecond)
	<-tm.C()
	if tm.Stop() {
		t.Fatal("Stop of a fired timer reported true")
	}
	if time.Since(Wall.Now()) < 0 {
		t.Fatal("wall clock in the future")
	}
}
