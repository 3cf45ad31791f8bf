// The floor under any heartbeat on this machine: what one ping round costs a server that does
// nothing else, written directly against the kernel. The server sends a 6-byte ping frame on
// each of N loopback TCP connections, then reads each 2-byte answer through one epoll set;
// the peer, another process, answers every ping. Prints the server's CPU (user + system) per
// connection per round, as bench/heartbeat.js measures the WebSocket servers.
//
//   cc -O2 -o heartbeat-floor heartbeat-floor.c && ./heartbeat-floor [N] [ROUNDS]
//
// bench/heartbeat.js builds and runs it when a C compiler is found, for its `floor` row.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static double cpu_us(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 10000;
  int rounds = argc > 2 ? atoi(argv[2]) : 10;
  int one = 1;
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 4096) || getsockname(l, (void *)&a, &al)) {
    perror("listen");
    return 1;
  }
  pid_t peer = fork();
  if (peer == 0) {
    // The peer: answers each ping with a pong; exits when the server goes (or after 60 s idle).
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
      int s = socket(AF_INET, SOCK_STREAM, 0);
      if (connect(s, (void *)&a, sizeof a)) _exit(1);
      setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      struct epoll_event e = {.events = EPOLLIN, .data.fd = s};
      epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
    }
    struct epoll_event ev[256];
    char b[64];
    for (;;) {
      int k = epoll_wait(ep, ev, 256, 60000);
      if (k <= 0) _exit(0);
      for (int i = 0; i < k; i++) {
        if (read(ev[i].data.fd, b, sizeof b) <= 0) _exit(0);
        if (write(ev[i].data.fd, "\x8a\x00", 2) != 2) _exit(0);
      }
    }
  }
  int *s = malloc(n * sizeof *s);
  int ep = epoll_create1(0);
  for (int i = 0; i < n; i++) {
    s[i] = accept(l, 0, 0);
    if (s[i] < 0) {
      perror("accept");
      kill(peer, SIGKILL);
      return 1;
    }
    setsockopt(s[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u32 = i};
    epoll_ctl(ep, EPOLL_CTL_ADD, s[i], &e);
  }
  sleep(1);
  double t0 = cpu_us();
  int answered = 0;
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < n; i++) send(s[i], "\x89\x04ping", 6, MSG_DONTWAIT);
    int got = 0;
    struct epoll_event ev[256];
    char b[64];
    while (got < n) {
      int k = epoll_wait(ep, ev, 256, 5000);
      if (k <= 0) break;
      for (int i = 0; i < k; i++)
        if (recv(s[ev[i].data.u32], b, sizeof b, MSG_DONTWAIT) > 0) got++;
    }
    answered += got;
    usleep(100000);
  }
  double used = cpu_us() - t0;
  printf("{\"conns\":%d,\"rounds\":%d,\"answered\":%d,\"cpuUsPerConnRound\":%.2f}\n", n, rounds, answered, used / n / rounds);
  kill(peer, SIGKILL);
  waitpid(peer, 0, 0);
  return 0;
}
