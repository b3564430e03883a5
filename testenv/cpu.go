package testenv

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Load benchmarks report the CPU time each process spends per request: the benchmark's
// own, the server's and Redis's, all on this machine.

// SelfCPU is the user and system time of this process.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ProcessCPU is the user and system time of process pid (Linux /proc), or -1 when it
// cannot be read.
func ProcessCPU(pid int) time.Duration {
	if pid <= 0 {
		return -1
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// Fields after the command, which is in parentheses: state is the 3rd field of the
	// line, utime the 14th, stime the 15th (proc(5)); the clock tick is 1/100 s on Linux.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// RedisPID is the process id of the test Redis when it runs on this machine, else 0.
func RedisPID(t testing.TB) int {
	t.Helper()
	rdb, _ := Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			if pid, err := strconv.Atoi(v); err == nil {
				if _, err := os.Stat("/proc/" + v); err == nil {
					return pid
				}
			}
		}
	}
	return 0
}

// ProcessSyscalls is how many read and write system calls process pid has made (Linux
// /proc/PID/io: syscr + syscw), or -1 when it cannot be read.
func ProcessSyscalls(pid int) int64 {
	if pid <= 0 {
		return -1
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return -1
	}
	var n int64
	found := 0
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if ok && (k == "syscr" || k == "syscw") {
			c, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return -1
			}
			n += c
			found++
		}
	}
	if found != 2 {
		return -1
	}
	return n
}
