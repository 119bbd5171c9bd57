// A trivial generation for bench/handover_cpu.py: serves HTTP on the socket-activated fd 3
// (sd_listen_fds(3): LISTEN_PID must be ours), sends READY=1 to NOTIFY_SOCKET
// (sd_notify(3); Go maps a leading "@" to the abstract namespace itself) and exits on SIGTERM.
package main

import (
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") == "" {
		os.Stderr.WriteString("trivial: LISTEN_PID is not mine or no LISTEN_FDS\n")
		os.Exit(2)
	}
	ln, err := net.FileListener(os.NewFile(3, "listen"))
	if err != nil {
		panic(err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	}))
	if addr := os.Getenv("NOTIFY_SOCKET"); addr != "" {
		conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			panic(err)
		}
		conn.Write([]byte("READY=1"))
		conn.Close()
	}
	<-stop
	ln.Close()
}
