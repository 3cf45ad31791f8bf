// The floor under a broadcast with one message in flight on this machine: the most
// deliveries per second any server can make here, written directly against the kernel. A
// server process sends a 64-byte frame to each of N loopback TCP connections; a peer process
// reads them through epoll and, once every connection has its copy, says so on a pipe; the
// server then sends the next. This is bench/run.js's `broadcast` workload without WebSocket,
// JavaScript or a runtime: only the sends, the reads and the wake-ups between them.
//
//   cc -O2 -o broadcast-floor broadcast-floor.c && ./broadcast-floor [N] [SECONDS]
//
// Prints one JSON line: deliveries per second, and the CPU each side used per delivery.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_us(int who) {
  struct rusage r;
  getrusage(who, &r);
  return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000;
  double seconds = argc > 2 ? atof(argv[2]) : 5;
  int one = 1, done_pipe[2], cpu_pipe[2];
  if (pipe(done_pipe) || pipe(cpu_pipe)) return 1;
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 4096) || getsockname(l, (void *)&a, &al)) return 1;
  pid_t peer = fork();
  if (peer == 0) {
    // The peer: n connections; each broadcast is complete when every one has read 64 bytes.
    int ep = epoll_create1(0);
    int *got = calloc(n, sizeof *got);
    for (int i = 0; i < n; i++) {
      int s = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(s, (void *)&a, sizeof a)) _exit(1);
      setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      struct epoll_event e = {.events = EPOLLIN, .data.u64 = ((unsigned long)i << 32) | (unsigned)s};
      epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
    }
    struct epoll_event ev[256];
    char b[4096];
    long complete = 0;
    int left = n;
    double t0 = cpu_us(RUSAGE_SELF);
    for (;;) {
      int k = epoll_wait(ep, ev, 256, 2000);
      if (k <= 0) break;
      for (int i = 0; i < k; i++) {
        int idx = ev[i].data.u64 >> 32, fd = (int)(ev[i].data.u64 & 0xffffffff);
        int r = read(fd, b, sizeof b);
        if (r <= 0) goto out;
        got[idx] += r;
        while (got[idx] >= 64) {
          got[idx] -= 64;
          if (--left == 0) {
            left = n;
            complete++;
            if (write(done_pipe[1], "x", 1) != 1) goto out;
          }
        }
      }
    }
  out:;
    double used = cpu_us(RUSAGE_SELF) - t0;
    if (write(cpu_pipe[1], &used, sizeof used) != sizeof used) _exit(1);
    _exit(0);
  }
  int *s = malloc(n * sizeof *s);
  for (int i = 0; i < n; i++) {
    s[i] = accept(l, 0, 0);
    if (s[i] < 0) return 1;
    setsockopt(s[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  char frame[64] = {(char)0x82, 62};
  memset(frame + 2, 'x', 62);
  char c;
  // Warm-up: a few broadcasts.
  for (int w = 0; w < 20; w++) {
    for (int i = 0; i < n; i++) send(s[i], frame, 64, 0);
    if (read(done_pipe[0], &c, 1) != 1) return 1;
  }
  long broadcasts = 0;
  double t0 = now(), c0 = cpu_us(RUSAGE_SELF);
  while (now() - t0 < seconds) {
    for (int i = 0; i < n; i++) send(s[i], frame, 64, 0);
    if (read(done_pipe[0], &c, 1) != 1) break;
    broadcasts++;
  }
  double wall = now() - t0, server_cpu = cpu_us(RUSAGE_SELF) - c0;
  for (int i = 0; i < n; i++) close(s[i]);
  double peer_cpu = 0;
  if (read(cpu_pipe[0], &peer_cpu, sizeof peer_cpu) != sizeof peer_cpu) peer_cpu = -1;
  waitpid(peer, 0, 0);
  double deliveries = (double)broadcasts * n;
  printf("{\"conns\":%d,\"deliveriesPerSec\":%.0f,\"serverCpuUsPerDelivery\":%.2f,\"peerCpuUsPerDelivery\":%.2f}\n", n,
         deliveries / wall, server_cpu / deliveries, peer_cpu / (deliveries + 20.0 * n));
  return 0;
}
