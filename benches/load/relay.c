/* relay-c: the load bench's second floor, a minimal CONNECT relay in C (contender `relay-c`).
 *
 * One thread, one epoll set (edge-triggered), no logging, no limits, no routes. It reads the
 * CONNECT head up to "\r\n\r\n", takes host:port from it (an IP literal; "localhost" is
 * 127.0.0.1), connects without blocking, answers "200 Connection Established" once the socket
 * is writable (EPOLLERR says the connect failed: no getsockopt), then relays with one read into
 * a 64 KiB buffer shared by every tunnel and one write per message. A read shorter than the
 * buffer ends the turn (the next edge brings more), so no read comes back EAGAIN in the usual
 * case. The first end of stream is forwarded with shutdown(SHUT_WR); the second closes both
 * sockets (nothing is half-open any more, so it needs no shutdown). TCP_NODELAY on both
 * sockets, as every real relay sets it. The listener is level-triggered and accepts one
 * connection per event, so accept never returns EAGAIN. Freed tunnels are released after the
 * batch of events, so no stale event reaches freed memory.
 *
 * Usage: relay-c 127.0.0.1:PORT. Exits when its stdin closes (the bench went away).
 * Built by the bench with `cc -O2` (benches/load/relay_c.rs).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (64 * 1024)
#define MAX_HEAD 8192

enum state { HEAD, CONNECTING, OPEN };

struct tunnel;
struct side {
	int fd;
	int rd, wr, hup; /* readiness seen and not used up; the peer's FIN or an error seen */
	struct tunnel *t;
};
struct tunnel {
	struct side s[2]; /* 0 the client, 1 the upstream; direction d reads s[d], writes s[1-d] */
	enum state state;
	char *head;
	size_t hlen, hend;
	char *pend[2]; /* bytes of direction d its destination would not take yet */
	size_t plen[2];
	int ended[2];
	int dead;
	struct tunnel *next_dead;
};

static int ep;
static char buf[BUF];
static struct tunnel *dead;

static const char OK200[] = "HTTP/1.1 200 Connection Established\r\n\r\n";
static const char E400[] = "HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n";
static const char E502[] = "HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\n\r\n";

static void kill_tunnel(struct tunnel *t)
{
	if (t->dead)
		return;
	t->dead = 1;
	t->next_dead = dead;
	dead = t;
}

static void release(struct tunnel *t)
{
	for (int i = 0; i < 2; i++) {
		if (t->s[i].fd >= 0)
			close(t->s[i].fd); /* close drops it from the epoll set */
		free(t->pend[i]);
	}
	free(t->head);
	free(t);
}

static int add(int fd, struct side *s)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = s};
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* Writes in direction d what the destination takes; keeps the rest. */
static int send_dir(struct tunnel *t, int d, const char *p, size_t n)
{
	struct side *dst = &t->s[1 - d];
	while (n > 0 && t->plen[d] == 0 && dst->wr) {
		ssize_t w = write(dst->fd, p, n);
		if (w < 0) {
			if (errno == EAGAIN) {
				dst->wr = 0;
				break;
			}
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	if (n > 0) {
		char *q = realloc(t->pend[d], t->plen[d] + n);
		if (!q)
			return -1;
		memcpy(q + t->plen[d], p, n);
		t->pend[d] = q;
		t->plen[d] += n;
	}
	return 0;
}

/* Moves bytes in direction d while readiness allows. */
static int pump(struct tunnel *t, int d)
{
	struct side *src = &t->s[d], *dst = &t->s[1 - d];
	for (;;) {
		if (t->plen[d] > 0) {
			if (!dst->wr)
				return 0;
			char *p = t->pend[d];
			size_t n = t->plen[d];
			t->pend[d] = NULL;
			t->plen[d] = 0;
			int r = send_dir(t, d, p, n);
			free(p);
			if (r < 0)
				return -1;
			if (t->plen[d] > 0)
				return 0;
		}
		if (t->ended[d] || !src->rd)
			return 0;
		ssize_t n = read(src->fd, buf, BUF);
		if (n == 0) {
			t->ended[d] = 1;
			src->rd = 0;
			/* Forward the half-close while the other way is open; else the close does it. */
			if (!t->ended[1 - d] && shutdown(dst->fd, SHUT_WR) < 0)
				return -1;
			return 0;
		}
		if (n < 0) {
			if (errno == EAGAIN) {
				src->rd = 0;
				return 0;
			}
			return -1;
		}
		if (n < BUF && !src->hup)
			src->rd = 0;
		if (send_dir(t, d, buf, (size_t)n) < 0)
			return -1;
	}
}

/* "CONNECT host:port ...": the address; host is an IP literal or localhost. */
static int parse_target(const char *head, size_t len, struct sockaddr_storage *sa, socklen_t *salen)
{
	if (len < 8 || memcmp(head, "CONNECT ", 8) != 0)
		return -1;
	const char *h = head + 8, *sp = memchr(h, ' ', len - 8);
	if (!sp)
		return -1;
	char target[300];
	size_t tl = (size_t)(sp - h);
	if (tl == 0 || tl >= sizeof target)
		return -1;
	memcpy(target, h, tl);
	target[tl] = 0;
	char *colon = strrchr(target, ':');
	if (!colon)
		return -1;
	*colon = 0;
	int port = atoi(colon + 1);
	char *host = target;
	if (*host == '[' && colon > host + 1 && colon[-1] == ']') {
		host++;
		colon[-1] = 0;
	}
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	struct sockaddr_in *v4 = (struct sockaddr_in *)sa;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)sa;
	memset(sa, 0, sizeof *sa);
	if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		v4->sin_port = htons((unsigned short)port);
		*salen = sizeof *v4;
	} else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
		v6->sin6_family = AF_INET6;
		v6->sin6_port = htons((unsigned short)port);
		*salen = sizeof *v6;
	} else {
		return -1;
	}
	return port > 0 && port < 65536 ? 0 : -1;
}

/* Reads the head; connects once it is whole. -1 closes the tunnel. */
static int read_head(struct tunnel *t)
{
	struct side *c = &t->s[0];
	while (c->rd) {
		size_t room = MAX_HEAD - t->hlen;
		ssize_t n = read(c->fd, t->head + t->hlen, room);
		if (n == 0)
			return -1;
		if (n < 0) {
			if (errno == EAGAIN) {
				c->rd = 0;
				break;
			}
			return -1;
		}
		size_t from = t->hlen > 3 ? t->hlen - 3 : 0;
		t->hlen += (size_t)n;
		if ((size_t)n < room && !c->hup)
			c->rd = 0;
		char *end = memmem(t->head + from, t->hlen - from, "\r\n\r\n", 4);
		if (end) {
			t->hend = (size_t)(end - t->head) + 4;
			struct sockaddr_storage sa;
			socklen_t salen;
			if (parse_target(t->head, t->hend, &sa, &salen) < 0) {
				(void)!write(c->fd, E400, sizeof E400 - 1);
				return -1;
			}
			int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (fd < 0)
				return -1;
			t->s[1].fd = fd;
			int one = 1;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			if (connect(fd, (struct sockaddr *)&sa, salen) < 0 && errno != EINPROGRESS) {
				(void)!write(c->fd, E502, sizeof E502 - 1);
				return -1;
			}
			if (add(fd, &t->s[1]) < 0)
				return -1;
			t->state = CONNECTING;
			return 0;
		}
		if (t->hlen == MAX_HEAD)
			return -1;
	}
	return 0;
}

static int drive(struct tunnel *t)
{
	if (t->state == HEAD && read_head(t) < 0)
		return -1;
	if (t->state == HEAD)
		return 0;
	if (t->state == CONNECTING) {
		struct side *u = &t->s[1];
		if (u->hup && !u->wr) {
			(void)!write(t->s[0].fd, E502, sizeof E502 - 1);
			return -1;
		}
		if (!u->wr)
			return 0;
		t->state = OPEN;
		if (send_dir(t, 1, OK200, sizeof OK200 - 1) < 0)
			return -1;
		/* Bytes the client sent after its head go first. */
		if (t->hlen > t->hend && send_dir(t, 0, t->head + t->hend, t->hlen - t->hend) < 0)
			return -1;
		free(t->head);
		t->head = NULL;
	}
	if (pump(t, 0) < 0 || pump(t, 1) < 0)
		return -1;
	if (t->ended[0] && t->ended[1] && t->plen[0] == 0 && t->plen[1] == 0)
		return -1;
	return 0;
}

static void accept_one(int lfd)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	struct tunnel *t = calloc(1, sizeof *t);
	char *head = malloc(MAX_HEAD);
	if (!t || !head) {
		free(t);
		free(head);
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	t->head = head;
	t->s[0].fd = fd;
	t->s[1].fd = -1;
	t->s[0].t = t->s[1].t = t;
	if (add(fd, &t->s[0]) < 0)
		release(t);
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	char *colon = argc == 2 ? strrchr(argv[1], ':') : NULL;
	if (!colon) {
		fprintf(stderr, "usage: relay-c IPV4:PORT\n");
		return 2;
	}
	*colon = 0;
	sa.sin_port = htons((unsigned short)atoi(colon + 1));
	if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
		fprintf(stderr, "relay-c: %s is not an IPv4 address\n", argv[1]);
		return 2;
	}
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
		perror("relay-c: listen");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
	struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &ep};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev) < 0) {
		perror("relay-c: epoll");
		return 1;
	}
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("relay-c: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			uint32_t e = evs[i].events;
			if (p == NULL) {
				accept_one(lfd);
				continue;
			}
			if (p == &ep) {
				if (read(0, buf, sizeof buf) <= 0)
					return 0;
				continue;
			}
			struct side *s = p;
			if (s->t->dead)
				continue;
			s->rd |= (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
			s->hup |= (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
			s->wr |= (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0 && !((e & EPOLLERR) && s->t->state == CONNECTING && s == &s->t->s[1]);
			if (drive(s->t) < 0)
				kill_tunnel(s->t);
		}
		while (dead) {
			struct tunnel *t = dead;
			dead = t->next_dead;
			release(t);
		}
	}
}
