/*
 * keel-netdelay - regions on one machine: network namespaces joined through a user-space
 * router that holds every packet between two regions for a fixed delay (this kernel has no
 * `tc netem`). `make demo REGIONS=3` runs the shop on it (docs/shop.md, "Regions").
 *
 *   keel-netdelay --netns NS1,NS2,... [--subnet 10.77.0] [--delay-ms 10] [--jitter-ms 0]
 *                 [--operator DEV] [--mtu 1500] [--duration-s S]
 *
 * Region k (from 1) is the existing network namespace NSk (`ip netns add NSk`): the router
 * opens a TUN device, keel0, inside it with the address SUBNET.k/24, and brings keel0 and
 * lo up. Every packet a region sends to another region's address leaves through its keel0,
 * is read here, held for --delay-ms (plus up to --jitter-ms, never reordering a link's
 * packets), and written into the other region's keel0, which receives it as if from a
 * wire: the delay is per packet, one way, for every protocol, and the processes see only
 * ordinary addresses. Traffic inside a region (its own SUBNET.k, or 127.0.0.1) never comes
 * here. --operator DEV also opens DEV in the namespace this runs in, with SUBNET.254/24 and
 * no delay to any region: the operator's link, through which `keel up`, `keel status` and a
 * load generator reach every region (the router holds nothing on it).
 *
 * It prints "ready" once every device is up, runs until SIGTERM/SIGINT (or --duration-s),
 * then prints what it forwarded and dropped per link and exits; the devices go with it.
 * Needs root (CAP_NET_ADMIN and setns).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REGIONS_MAX 8
#define ENDPOINTS_MAX (REGIONS_MAX + 1) /* the regions and the operator's link */
#define OPERATOR_OCTET 254
#define MTU_MIN 576
#define MTU_MAX 65535
#define DELAY_MS_MAX 10000
#define QUEUED_BYTES_MAX (64u << 20) /* held in all links together; beyond: dropped */
#define NS_NAME_MAX 64
#define TUN_NAME "keel0"

typedef struct pkt {
    struct pkt *next;
    int64_t due_ns;
    uint32_t len;
    uint8_t data[];
} pkt_t;

typedef struct link {
    pkt_t *head, *tail;
    int64_t last_due_ns;
    uint64_t forwarded, dropped_full;
} link_t;

typedef struct router {
    int fds[ENDPOINTS_MAX];
    int n;           /* endpoints: the regions, then the operator's link if any */
    int operator;    /* index of the operator's link, or -1 */
    uint32_t subnet; /* the /24, host order, last octet 0 */
    int64_t delay_ns, jitter_ns;
    uint32_t mtu;
    size_t queued_bytes;
    uint64_t rng;
    uint64_t not_ipv4, unknown_dst, write_errors;
    link_t links[ENDPOINTS_MAX][ENDPOINTS_MAX];
} router_t;

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int usage(void)
{
    fprintf(stderr, "usage: keel-netdelay --netns NS1,NS2,... [--subnet A.B.C] [--delay-ms D]\n"
                    "                     [--jitter-ms J] [--operator DEV] [--mtu M] "
                    "[--duration-s S]\n");
    return 2;
}

/* Sets an IPv4 address or netmask (req SIOCSIFADDR / SIOCSIFNETMASK) on dev. */
static int set_inet(int s, const char *dev, unsigned long req, uint32_t addr)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(addr)};
    memcpy(&ifr.ifr_addr, &sin, sizeof(sin));
    return ioctl(s, req, &ifr);
}

static int set_up(int s, const char *dev, uint32_t mtu)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
    if (mtu > 0) {
        ifr.ifr_mtu = (int)mtu;
        if (ioctl(s, SIOCSIFMTU, &ifr) != 0)
            return -1;
    }
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
        return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &ifr);
}

/*
 * Opens the TUN device dev in the calling thread's network namespace, with addr/24, up,
 * and lo up too (a fresh namespace has it down). The fd, or -1 (said on stderr).
 */
static int open_tun(const char *where, const char *dev, uint32_t addr, uint32_t mtu, int lo)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "keel-netdelay: %s: /dev/net/tun: %s\n", where, strerror(errno));
        return -1;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
    int s = -1;
    const char *step = "TUNSETIFF";
    if (ioctl(fd, TUNSETIFF, &ifr) != 0)
        goto fail;
    step = "socket";
    if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        goto fail;
    step = "address";
    if (set_inet(s, dev, SIOCSIFADDR, addr) != 0 ||
        set_inet(s, dev, SIOCSIFNETMASK, 0xffffff00u) != 0)
        goto fail;
    step = "up";
    if (set_up(s, dev, mtu) != 0 || (lo && set_up(s, "lo", 0) != 0))
        goto fail;
    close(s);
    return fd;
fail:
    fprintf(stderr, "keel-netdelay: %s: %s %s: %s\n", where, dev, step, strerror(errno));
    if (s >= 0)
        close(s);
    close(fd);
    return -1;
}

/* Enters the named namespace, opens its TUN device, comes back. The fd, or -1. */
static int open_tun_in(const char *ns, uint32_t addr, uint32_t mtu)
{
    char path[NS_NAME_MAX + 32];
    snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
    int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    int there = open(path, O_RDONLY | O_CLOEXEC);
    int fd = -1;
    if (home < 0 || there < 0) {
        fprintf(stderr, "keel-netdelay: %s: %s (ip netns add %s first)\n", ns, strerror(errno), ns);
    } else if (setns(there, CLONE_NEWNET) != 0) {
        fprintf(stderr, "keel-netdelay: setns %s: %s (needs root)\n", ns, strerror(errno));
    } else {
        fd = open_tun(ns, TUN_NAME, addr, mtu, 1);
        if (setns(home, CLONE_NEWNET) != 0) {
            fprintf(stderr, "keel-netdelay: cannot return to its own namespace: %s\n",
                    strerror(errno));
            exit(1);
        }
    }
    if (home >= 0)
        close(home);
    if (there >= 0)
        close(there);
    return fd;
}

static uint64_t next_rand(router_t *r)
{
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    return r->rng;
}

/* The endpoint an IPv4 destination belongs to, or -1. */
static int endpoint_of(const router_t *r, uint32_t dst)
{
    if ((dst & 0xffffff00u) != r->subnet)
        return -1;
    uint32_t last = dst & 0xffu;
    if (last == OPERATOR_OCTET)
        return r->operator;
    int region = (int)last - 1;
    int regions = r->operator>= 0 ? r->n - 1 : r->n;
    return region >= 0 && region < regions ? region : -1;
}

static void emit(router_t *r, int to, const uint8_t *data, uint32_t len)
{
    if (write(r->fds[to], data, len) != (ssize_t)len)
        r->write_errors++;
}

/* One packet read from endpoint `from`: sent on now, or held on its link. */
static void route(router_t *r, int from, const uint8_t *data, uint32_t len, int64_t now)
{
    if (len < 20 || (data[0] >> 4) != 4) {
        r->not_ipv4++; /* IPv6 neighbour discovery and the like: regions speak IPv4 */
        return;
    }
    uint32_t dst;
    memcpy(&dst, data + 16, 4);
    int to = endpoint_of(r, ntohl(dst));
    if (to < 0 || to == from) {
        r->unknown_dst++;
        return;
    }
    link_t *l = &r->links[from][to];
    int64_t delay = 0;
    if (from != r->operator&& to != r->operator) {
        delay = r->delay_ns;
        if (r->jitter_ns > 0)
            delay += (int64_t)(next_rand(r) % (uint64_t)(r->jitter_ns + 1));
    }
    if (delay == 0 && l->head == NULL) {
        emit(r, to, data, len);
        l->forwarded++;
        return;
    }
    if (r->queued_bytes + len > QUEUED_BYTES_MAX) {
        l->dropped_full++;
        return;
    }
    pkt_t *p = malloc(sizeof(*p) + len);
    if (p == NULL) {
        l->dropped_full++;
        return;
    }
    p->next = NULL;
    p->len = len;
    memcpy(p->data, data, len);
    /* jitter never reorders a link: a packet is due no earlier than the one before it */
    p->due_ns = now + delay > l->last_due_ns ? now + delay : l->last_due_ns;
    l->last_due_ns = p->due_ns;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
    r->queued_bytes += len;
}

/* Sends every held packet that is due; the earliest due time still held, or INT64_MAX. */
static int64_t release_due(router_t *r, int64_t now)
{
    int64_t next = INT64_MAX;
    for (int a = 0; a < r->n; a++)
        for (int b = 0; b < r->n; b++) {
            link_t *l = &r->links[a][b];
            while (l->head && l->head->due_ns <= now) {
                pkt_t *p = l->head;
                l->head = p->next;
                if (l->head == NULL)
                    l->tail = NULL;
                emit(r, b, p->data, p->len);
                l->forwarded++;
                r->queued_bytes -= p->len;
                free(p);
            }
            if (l->head && l->head->due_ns < next)
                next = l->head->due_ns;
        }
    return next;
}

static void print_stats(const router_t *r, char names[][NS_NAME_MAX])
{
    printf("link                                 forwarded   dropped (queue full)\n");
    for (int a = 0; a < r->n; a++)
        for (int b = 0; b < r->n; b++) {
            const link_t *l = &r->links[a][b];
            if (l->forwarded || l->dropped_full)
                printf("%-16s -> %-16s %10llu %10llu\n", names[a], names[b],
                       (unsigned long long)l->forwarded, (unsigned long long)l->dropped_full);
        }
    printf("not IPv4 %llu, unknown destination %llu, write errors %llu\n",
           (unsigned long long)r->not_ipv4, (unsigned long long)r->unknown_dst,
           (unsigned long long)r->write_errors);
    fflush(stdout);
}

static int parse_num(const char *flag, const char *v, long lo, long hi, long *out)
{
    char *end = NULL;
    long x = strtol(v, &end, 10);
    if (end == v || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "keel-netdelay: %s '%s': expected an integer in %ld..%ld\n", flag, v, lo,
                hi);
        return -1;
    }
    *out = x;
    return 0;
}

int main(int argc, char **argv)
{
    static router_t r;
    static char names[ENDPOINTS_MAX][NS_NAME_MAX];
    const char *netns = NULL, *subnet = "10.77.0", *operator_dev = NULL;
    long delay_ms = 10, jitter_ms = 0, mtu = 1500, duration_s = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            return usage();
        i++;
        int bad = 0;
        if (strcmp(f, "--netns") == 0)
            netns = v;
        else if (strcmp(f, "--subnet") == 0)
            subnet = v;
        else if (strcmp(f, "--operator") == 0)
            operator_dev = v;
        else if (strcmp(f, "--delay-ms") == 0)
            bad = parse_num(f, v, 0, DELAY_MS_MAX, &delay_ms);
        else if (strcmp(f, "--jitter-ms") == 0)
            bad = parse_num(f, v, 0, DELAY_MS_MAX, &jitter_ms);
        else if (strcmp(f, "--mtu") == 0)
            bad = parse_num(f, v, MTU_MIN, MTU_MAX, &mtu);
        else if (strcmp(f, "--duration-s") == 0)
            bad = parse_num(f, v, 0, 86400 * 365, &duration_s);
        else
            return usage();
        if (bad)
            return 2;
    }
    struct in_addr sn;
    char probe[32];
    snprintf(probe, sizeof(probe), "%.20s.0", subnet);
    if (netns == NULL || inet_pton(AF_INET, probe, &sn) != 1) {
        fprintf(stderr, "keel-netdelay: --netns is required; --subnet is three octets (A.B.C)\n");
        return 2;
    }
    if (operator_dev && strlen(operator_dev) >= IFNAMSIZ) {
        fprintf(stderr, "keel-netdelay: --operator: at most %d characters\n", IFNAMSIZ - 1);
        return 2;
    }
    r.subnet = ntohl(sn.s_addr);
    r.delay_ns = delay_ms * 1000000;
    r.jitter_ns = jitter_ms * 1000000;
    r.mtu = (uint32_t)mtu;
    r.rng = (uint64_t)now_ns() | 1;
    r.operator= - 1;
    for (const char *p = netns; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= NS_NAME_MAX || r.n == REGIONS_MAX) {
            fprintf(stderr, "keel-netdelay: --netns: 1..%d names of 1..%d characters\n",
                    REGIONS_MAX, NS_NAME_MAX - 1);
            return 2;
        }
        memcpy(names[r.n], p, len);
        names[r.n][len] = '\0';
        r.n++;
        p += len + (p[len] == ',');
    }
    for (int k = 0; k < r.n; k++)
        if ((r.fds[k] = open_tun_in(names[k], r.subnet | (uint32_t)(k + 1), r.mtu)) < 0)
            return 1;
    if (operator_dev) {
        r.operator= r.n;
        snprintf(names[r.n], NS_NAME_MAX, "operator");
        r.fds[r.n] = open_tun("operator", operator_dev, r.subnet | OPERATOR_OCTET, r.mtu, 0);
        if (r.fds[r.n++] < 0)
            return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int k = 0; k < r.n; k++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, r.fds[k], &ev) != 0) {
            perror("keel-netdelay: epoll_ctl");
            return 1;
        }
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);
    printf("ready: %d regions on %s.0/24, %ld ms one way between regions (jitter %ld ms)%s\n",
           r.operator>= 0 ? r.n - 1 : r.n, subnet, delay_ms, jitter_ms,
           operator_dev ? ", operator link without delay" : "");
    fflush(stdout);
    uint8_t *buf = malloc(MTU_MAX);
    if (buf == NULL)
        return 1;
    int64_t end = duration_s > 0 ? now_ns() + duration_s * 1000000000LL : INT64_MAX;
    int64_t next = INT64_MAX;
    while (!stop_signal) {
        int64_t now = now_ns();
        if (now >= end)
            break;
        int64_t wake = next < end ? next : end;
        int timeout_ms = -1;
        if (wake != INT64_MAX) /* at most a second: no overflow for a long --duration-s */
            timeout_ms = wake <= now                      ? 0
                         : wake - now >= 1000LL * 1000000 ? 1000
                                                          : (int)((wake - now + 999999) / 1000000);
        struct epoll_event evs[ENDPOINTS_MAX];
        int got = epoll_wait(ep, evs, ENDPOINTS_MAX, timeout_ms);
        if (got < 0 && errno != EINTR) {
            perror("keel-netdelay: epoll_wait");
            break;
        }
        now = now_ns();
        for (int e = 0; e < got; e++) {
            int from = (int)evs[e].data.u32;
            for (;;) { /* drain: a packet not read now would wait for the next event */
                ssize_t len = read(r.fds[from], buf, MTU_MAX);
                if (len <= 0)
                    break;
                route(&r, from, buf, (uint32_t)len, now);
            }
        }
        next = release_due(&r, now_ns());
    }
    free(buf);
    print_stats(&r, names);
    for (int a = 0; a < r.n; a++) /* what was still held dies with the devices */
        for (int b = 0; b < r.n; b++)
            for (pkt_t *p = r.links[a][b].head, *held_next; p; p = held_next) {
                held_next = p->next;
                free(p);
            }
    return 0;
}
