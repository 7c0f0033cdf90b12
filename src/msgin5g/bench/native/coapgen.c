/*
 * coapgen: the native load engine of `msgin5g bench p2p|reg --engine c`.
 *
 * What it is for. The Python generator (msgin5g/bench/load.py, peer.py) costs
 * about as much CPU per end-to-end message as the server it measures, and
 * shares the machine with it. This program runs ONLY the measured load phase,
 * in C, on UDP sockets it inherits: the Python worker opens one connected
 * socket per simulated UE ("lane"), registers it (REG), then hands the file
 * descriptors over (subprocess pass_fds) and relays what this program prints.
 * The semantics are those of load.py's _Lanes / P2pWorker / RegWorker and
 * peer.py's RawUe; msgin5g/bench/native.py is the Python side.
 *
 * What it does:
 *  - per lane, CON `POST /msgin5g` (Uri-Path "msgin5g", Content-Format 50),
 *    a fresh Message ID and a fresh 4-byte token each, --window in flight;
 *  - closed loop (rate 0): an answer starts the lane's next request; a 5.xx
 *    answer delays it by min(Max-Age, 50 ms) (no Max-Age: 1 s, so 50 ms);
 *    paced (rate R > 0, this process's share): every millisecond the due number
 *    of sends goes out round-robin over the lanes with room in their window;
 *    a send with no room anywhere counts as "behind" (once the window opened);
 *  - RFC 7252 section 4.2 retransmission: ACK_TIMEOUT 2 s doubling, no random
 *    factor, MAX_RETRANSMIT 4, then the request counts as timed out; an empty
 *    ACK means a separate response follows (no timeout after it); RST ends the
 *    request (counted as refused, like any non-success answer);
 *  - a server CON POST (a delivered MSG or AGGMSG) is ACKed at once with a
 *    piggybacked 2.04; retransmissions are recognised by (Message ID, token);
 *    a CON ping (empty) gets RST; other CON requests an empty ACK;
 *  - p2p bodies: prefix (from Python) + serial + `","payload":"` + base64(the
 *    8-byte little-endian double send time, CLOCK_MONOTONIC seconds = Python's
 *    time.perf_counter on Linux, + 'x' up to --size octets) + `"` + the tail
 *    (`,"storeAndForwardFlag":true}` with store, else `}`); success = 2.xx
 *    whose payload holds DELY_ACCEPTED or DELY_STORED;
 *  - reg bodies: per lane the REG bodies Python precomputed, cycled (the
 *    second one first, as RegWorker.body does); success = 2.xx holding
 *    "SUCCESS" (then also received, with its latency);
 *  - receive side: each "payload" string member (any JSON spacing) of a
 *    delivered body (AGGMSG: one per item) whose base64 starts
 *    with 8 decodable octets is a stamp: arrived += 1, and when t0 <= sent_at
 *    < t_end: received += 1 and the latency goes into the histogram;
 *  - histograms bucket-compatible with msgin5g.bench.stats.Histogram (same
 *    formula: index = int(log(us) * 230 / ln 10), 1841 buckets), printed
 *    sparse with their maximum, so Python merges them (Histogram.from_wire).
 *
 * Cost: per end-to-end message two send(2) (the request, the ACK of the
 * delivery) and two recvmsg(2), plus a share of epoll_wait; see receive().
 * Waking for every datagram costs more than the system calls on a VM, so when
 * nothing is due the loop first sleeps 0.5 ms (NAP_NS) and then handles what
 * arrived meanwhile together; latencies are taken from the kernel's receive
 * timestamps (SO_TIMESTAMPNS), so the pause does not enter them. Requests
 * leave up to 0.5 ms later than they could (closed loop), paced sends in
 * bursts per millisecond as before.
 *
 * What it does not do: DTLS, block-wise transfer (RFC 7959), Observe
 * (RFC 7641: notifications for unknown tokens are only counted as payloads),
 * registration (Python does the set-up), fanout and a2p modes.
 *
 * Control (stdin, text lines; the Python side writes them all at once):
 *     coapgen 1
 *     mode p2p|reg
 *     window K          requests in flight per lane
 *     rate R            this process's paced rate per second (0: closed loop)
 *     size N            p2p payload octets (>= 8)
 *     store 0|1         p2p storeAndForwardFlag
 *     t0 SECONDS        the measured window [t0, t_end), CLOCK_MONOTONIC
 *     t_end SECONDS
 *     lane FD N MID     an inherited connected UDP socket, its next Message ID
 *                       (Python's counter goes on: a used ID would be answered
 *                       from the server's duplicate cache), then N lines: p2p
 *                       N = 1, the body prefix; reg: the REG bodies
 *     go                start the load now
 * later "stop" ends the run. Output (stdout): every 50 ms one line
 *     live SENT REFUSED RECEIVED ARRIVED TIMEOUTS
 * and after "stop" one line "final " + JSON in the form of
 * msgin5g.bench.stats.Counts.to_wire (requests still unanswered at the stop
 * count as timeouts), then exit status 0. Errors: one line on stderr, status 2.
 *
 * Test modes (tests/unit/bench/test_native.py), each reading stdin lines:
 *     coapgen --selftest-histogram   latencies in seconds -> histogram JSON
 *     coapgen --selftest-body        "SIZE STORE SERIAL SENT_AT PREFIX" -> body
 *     coapgen --selftest-payloads    delivered bodies -> their stamps (%.17g)
 *
 * Build: cc -O2 -Wall -Wextra -o coapgen coapgen.c -lm (C99, libc + libm).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ACK_TIMEOUT 2.0
#define MAX_RETRANSMIT 4
#define BACKOFF_MAX 0.05
#define SWEEP_EVERY 0.1
#define LIVE_EVERY 0.05
#define NAP_NS 500000 /* see the header: "Cost" */
#define PER_DECADE 230
#define DECADES 8
#define BUCKETS (PER_DECADE * DECADES + 1)
#define SEEN_SLOTS 4096
#define RECV_MAX 65536
#define HEADER_MAX 24 /* CoAP header, token, Uri-Path, Content-Format, 0xFF */

/* ------------------------------------------------------------ utilities */

static void die(const char *what)
{
    fprintf(stderr, "coapgen: %s\n", what);
    exit(2);
}

static void *xalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CLOCK_REALTIME minus CLOCK_MONOTONIC: turns the kernel's receive
 * timestamps (SO_TIMESTAMPNS, real time) into the monotonic clock. */
static double g_real_offset;

static void real_offset_update(void)
{
    struct timespec real, mono;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    g_real_offset = (double)(real.tv_sec - mono.tv_sec) +
                    (double)(real.tv_nsec - mono.tv_nsec) * 1e-9;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ histogram */

typedef struct {
    uint64_t n[BUCKETS];
    double max_s;
} Histogram;

static double g_scale; /* PER_DECADE / ln 10, as stats.py's _SCALE */

static void hist_add(Histogram *h, double seconds)
{
    double micros = seconds * 1e6;
    int index = 0;
    if (micros > 1.0) {
        double v = log(micros) * g_scale;
        index = v >= (double)(BUCKETS - 1) ? BUCKETS - 1 : (int)v;
    }
    h->n[index]++;
    if (seconds > h->max_s)
        h->max_s = seconds;
}

static void hist_print(FILE *out, const Histogram *h)
{
    int first = 1;
    fprintf(out, "{\"max_s\":%.17g,\"buckets\":{", h->max_s);
    for (int i = 0; i < BUCKETS; i++) {
        if (!h->n[i])
            continue;
        fprintf(out, "%s\"%d\":%llu", first ? "" : ",", i,
                (unsigned long long)h->n[i]);
        first = 0;
    }
    fputs("}}", out);
}

/* ------------------------------------------------------------ base64 */

static const char B64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static signed char B64_VALUE[256];

static size_t b64_encode(char *out, const unsigned char *in, size_t n)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = B64[v >> 18];
        out[o++] = B64[(v >> 12) & 63];
        out[o++] = B64[(v >> 6) & 63];
        out[o++] = '=';
    }
    return o;
}

/* The send time at the start of a base64 JSON string (p .. end); 0 if the
 * string does not start with 8 octets (11 base64 digits; "\/" is '/'). */
static int stamp_decode(const unsigned char *p, const unsigned char *end,
                        double *sent_at)
{
    uint64_t bits = 0;
    int digits = 0;
    while (digits < 11 && p < end && *p != '"') {
        int c = *p++;
        if (c == '\\' && p < end && *p == '/')
            c = *p++;
        int v = B64_VALUE[c];
        if (v < 0)
            return 0;
        digits++;
        /* 11 digits carry 66 bits: of the last one only its first 4 */
        bits = digits < 11 ? bits << 6 | (uint64_t)v : bits << 4 | (uint64_t)v >> 2;
    }
    if (digits < 11)
        return 0;
    unsigned char octets[8];
    for (int i = 0; i < 8; i++)
        octets[i] = (unsigned char)(bits >> (56 - 8 * i));
    uint64_t le = 0;
    for (int i = 7; i >= 0; i--)
        le = le << 8 | octets[i];
    memcpy(sent_at, &le, sizeof *sent_at);
    return 1;
}

/* ------------------------------------------------------------ lanes */

typedef struct {
    int active;   /* a request waits for its answer */
    int mid_live; /* its Message ID still matches an ACK or RST */
    int acked;    /* empty ACK seen: a separate response follows */
    int attempts;
    uint16_t mid;
    uint32_t token;
    double sent_at, due;
    size_t len;
    unsigned char *dgram;
} Entry;

typedef struct {
    uint16_t mid;
    uint8_t used, tkl;
    unsigned char token[8];
} Seen;

typedef struct {
    int fd;
    int in_flight;
    unsigned mask, bits; /* the table of requests: mask + 1 entries */
    uint32_t mid_next, tok_next;
    Entry *tab;
    char **bodies; /* p2p: [0] is the prefix */
    size_t *lens;
    size_t nbodies, next;
    Seen *seen; /* server POSTs seen, by Message ID (allocated on first use) */
} Lane;

#define CAUSES 8   /* distinct refusal keys kept; more go to "other" */
#define CAUSE_LEN 80

typedef struct {
    uint64_t sent, accepted, refused, received, timeouts, behind, arrived;
    uint64_t mid_reused, bad;
    Histogram latency, answer;
    char cause[CAUSES][CAUSE_LEN]; /* refusals by key, as refusal_cause() in stats.py */
    uint64_t cause_n[CAUSES];
    size_t ncauses;
} Counts;

enum { P2P, REG };

static struct {
    int mode, window, store, size;
    double rate, t0, t_end;
    Lane *lanes;
    size_t nlanes;
    Counts c;
    uint64_t serial;
    char tail_b64[6000]; /* base64 of the 'x' octets after the first 9 */
    size_t tail_b64_len;
    /* deferred sends of refused lanes (FIFO: every delay is the same) */
    size_t *defer_lane;
    double *defer_at;
    size_t defer_cap, defer_head, defer_count;
} G;

static int in_window(double t) { return G.t0 <= t && t < G.t_end; }

/* When the datagram being handled arrived (the kernel's time): latencies are
 * measured to it, not to when this process got round to reading it. */
static double g_rx;

static void lane_init(Lane *lane, size_t max_body, unsigned mid)
{
    unsigned size = 2;
    lane->bits = 1;
    while (size < 2u * (unsigned)G.window) {
        size <<= 1;
        lane->bits++;
    }
    lane->mask = size - 1;
    lane->tab = xalloc(size * sizeof(Entry));
    for (unsigned i = 0; i < size; i++)
        lane->tab[i].dgram = xalloc(HEADER_MAX + max_body);
    lane->mid_next = mid & 0xFFFF;
    lane->tok_next = 1;
    int one = 1; /* receive times from the kernel (see receive()) */
    (void)setsockopt(lane->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
    int flags = fcntl(lane->fd, F_GETFL);
    if (flags < 0 || fcntl(lane->fd, F_SETFL, flags | O_NONBLOCK) < 0)
        die("a lane's file descriptor is not open (pass_fds?)");
}

/* The p2p body for a send at `at` (serial from the process's counter). */
static size_t p2p_body(char *out, const char *prefix, size_t prefix_len,
                       uint64_t serial, double at)
{
    size_t o = 0;
    memcpy(out, prefix, prefix_len);
    o += prefix_len;
    o += (size_t)sprintf(out + o, "%llu", (unsigned long long)serial);
    memcpy(out + o, "\",\"payload\":\"", 13);
    o += 13;
    unsigned char head[9];
    memcpy(head, &at, 8); /* little-endian hosts only (x86, arm64) */
    head[8] = 'x';
    o += b64_encode(out + o, head, G.size >= 9 ? 9 : 8);
    memcpy(out + o, G.tail_b64, G.tail_b64_len);
    o += G.tail_b64_len;
    out[o++] = '"';
    if (G.store) {
        memcpy(out + o, ",\"storeAndForwardFlag\":true}", 28);
        o += 28;
    } else
        out[o++] = '}';
    return o;
}

static void tail_init(void)
{
    static unsigned char xs[4000];
    size_t n = G.size > 9 ? (size_t)G.size - 9 : 0;
    memset(xs, 'x', n);
    G.tail_b64_len = b64_encode(G.tail_b64, xs, n);
}

static size_t p2p_max_body(size_t prefix_len)
{
    return prefix_len + 20 + 13 + 4 * ((size_t)G.size / 3 + 1) + 1 + 28;
}

static void xsend(int fd, const void *buf, size_t len)
{
    /* errors (a full buffer, ICMP refused) surface as timeouts, as in RawUe */
    if (send(fd, buf, len, 0) < 0 && errno == EINTR)
        (void)send(fd, buf, len, 0);
}

static void send_request(Lane *lane, double now)
{
    uint16_t mid;
    Entry *e;
    do { /* a fresh Message ID whose table entry is free */
        mid = (uint16_t)(lane->mid_next++ & 0xFFFF);
        e = &lane->tab[mid & lane->mask];
    } while (e->active);
    uint32_t token = lane->tok_next++ << lane->bits | (mid & lane->mask);
    unsigned char *d = e->dgram;
    d[0] = 0x44; /* version 1, CON, token length 4 */
    d[1] = 0x02; /* POST */
    d[2] = (unsigned char)(mid >> 8);
    d[3] = (unsigned char)mid;
    d[4] = (unsigned char)(token >> 24);
    d[5] = (unsigned char)(token >> 16);
    d[6] = (unsigned char)(token >> 8);
    d[7] = (unsigned char)token;
    memcpy(d + 8, "\xb7msgin5g\x11\x32\xff", 11); /* Uri-Path, Content-Format 50 */
    size_t len = 19;
    if (G.mode == P2P) {
        len += p2p_body((char *)d + len, lane->bodies[0], lane->lens[0], ++G.serial, now);
    } else {
        lane->next = (lane->next + 1) % lane->nbodies;
        memcpy(d + len, lane->bodies[lane->next], lane->lens[lane->next]);
        len += lane->lens[lane->next];
    }
    e->active = 1;
    e->mid_live = 1;
    e->acked = 0;
    e->attempts = 0;
    e->mid = mid;
    e->token = token;
    e->sent_at = now;
    e->due = now + ACK_TIMEOUT;
    e->len = len;
    lane->in_flight++;
    if (in_window(now))
        G.c.sent++;
    xsend(lane->fd, d, len);
}

/* ------------------------------------------------------------ answers */

typedef struct {
    int type, code, tkl;
    uint16_t mid;
    const unsigned char *token;
    const unsigned char *payload;
    size_t payload_len;
    long max_age; /* -1: absent */
} Message;

static int coap_parse(const unsigned char *b, size_t n, Message *m)
{
    if (n < 4 || (b[0] >> 6) != 1)
        return 0;
    m->type = (b[0] >> 4) & 3;
    m->tkl = b[0] & 15;
    m->code = b[1];
    m->mid = (uint16_t)(b[2] << 8 | b[3]);
    if (m->tkl > 8 || 4u + (size_t)m->tkl > n)
        return 0;
    m->token = b + 4;
    m->payload = NULL;
    m->payload_len = 0;
    m->max_age = -1;
    size_t i = 4 + (size_t)m->tkl;
    unsigned number = 0;
    while (i < n) {
        if (b[i] == 0xFF) {
            if (i + 1 >= n)
                return 0; /* a payload marker with no payload */
            m->payload = b + i + 1;
            m->payload_len = n - i - 1;
            return 1;
        }
        unsigned delta = b[i] >> 4, length = b[i] & 15;
        i++;
        if (delta == 15 || length == 15)
            return 0;
        if (delta == 13) {
            if (i >= n)
                return 0;
            delta = 13u + b[i++];
        } else if (delta == 14) {
            if (i + 1 >= n)
                return 0;
            delta = 269u + (unsigned)(b[i] << 8 | b[i + 1]);
            i += 2;
        }
        if (length == 13) {
            if (i >= n)
                return 0;
            length = 13u + b[i++];
        } else if (length == 14) {
            if (i + 1 >= n)
                return 0;
            length = 269u + (unsigned)(b[i] << 8 | b[i + 1]);
            i += 2;
        }
        if (i + length > n)
            return 0;
        number += delta;
        if (number == 14 && length <= 4) { /* Max-Age */
            long v = 0;
            for (unsigned k = 0; k < length; k++)
                v = v << 8 | b[i + k];
            m->max_age = v;
        }
        i += length;
    }
    return 1;
}

static int has(const Message *m, const char *needle)
{
    return m->payload && memmem(m->payload, m->payload_len, needle, strlen(needle));
}

/* The value of the JSON member `"name":"VALUE"` (VALUE [A-Za-z0-9_], at most
   64), copied to out; 0 when absent. The server's JSON is compact, but a
   space after the colon is allowed as in stats.py. */
static size_t member(const Message *m, const char *name, char *out)
{
    if (!m->payload)
        return 0;
    const unsigned char *end = m->payload + m->payload_len;
    const unsigned char *p = memmem(m->payload, m->payload_len, name, strlen(name));
    if (!p)
        return 0;
    p += strlen(name);
    while (p < end && (*p == ' ' || *p == ':'))
        p++;
    if (p >= end || *p++ != '"')
        return 0;
    size_t n = 0;
    while (p + n < end && n < 64 &&
           (isalnum(p[n]) || p[n] == '_'))
        n++;
    memcpy(out, p, n);
    out[n] = 0;
    return n;
}

/* The slot of key in G.c.cause, added if new; the last slot is "other". */
static size_t cause_slot(const char *key)
{
    for (size_t i = 0; i < G.c.ncauses; i++)
        if (!strcmp(G.c.cause[i], key))
            return i;
    if (G.c.ncauses >= CAUSES - 1 && strcmp(key, "other"))
        return cause_slot("other");
    snprintf(G.c.cause[G.c.ncauses], CAUSE_LEN, "%s", key);
    return G.c.ncauses++;
}

static void refuse(const Message *m)
{
    char cause[CAUSE_LEN] = "", key[CAUSE_LEN];
    if (!member(m, "\"failureCause\"", cause) && !member(m, "\"cause\"", cause))
        member(m, "\"deliveryStatus\"", cause);
    if ((m->code >> 5) == 2)
        snprintf(key, sizeof key, "%s", cause[0] ? cause : "refused");
    else if (cause[0])
        snprintf(key, sizeof key, "%d.%02d %s", m->code >> 5, m->code & 31, cause);
    else
        snprintf(key, sizeof key, "%d.%02d", m->code >> 5, m->code & 31);
    G.c.refused++;
    G.c.cause_n[cause_slot(key)]++;
}

static void counted(const Message *m, double sent_at)
{
    if (!in_window(sent_at))
        return;
    if (!m) {
        G.c.timeouts++;
        return;
    }
    hist_add(&G.c.answer, g_rx - sent_at);
    int ok = (m->code >> 5) == 2;
    if (G.mode == P2P) {
        if (ok && (has(m, "DELY_ACCEPTED") || has(m, "DELY_STORED")))
            G.c.accepted++;
        else
            refuse(m);
    } else if (ok && has(m, "\"SUCCESS\"")) {
        G.c.accepted++;
        G.c.received++;
        hist_add(&G.c.latency, g_rx - sent_at);
    } else
        refuse(m);
}

static void defer(size_t lane, double at)
{
    if (G.defer_count == G.defer_cap)
        die("internal error: deferred-send queue full");
    size_t slot = (G.defer_head + G.defer_count) % G.defer_cap;
    G.defer_lane[slot] = lane;
    G.defer_at[slot] = at;
    G.defer_count++;
}

static void finish(Lane *lane, Entry *e, const Message *m, double now)
{
    e->active = 0;
    e->mid_live = 0;
    lane->in_flight--;
    counted(m, e->sent_at);
    if (G.rate > 0 || now >= G.t_end)
        return;
    double delay = 0.0;
    /* 5.xx with Max-Age, or a MSGRESP refused by the per-UE submission limit
     * (a 2.xx without Max-Age): the lane waits BACKOFF_MAX, so a closed loop
     * does not hammer a rate-limited server; every delay stays BACKOFF_MAX,
     * which keeps the deferred queue FIFO */
    if (m && ((m->code >> 5) == 5
              || ((m->code >> 5) == 2 && has(m, "\"SERVER_CONGESTION\"")))) {
        double max_age = m->max_age < 0 ? 1.0 : (double)m->max_age;
        delay = max_age < BACKOFF_MAX ? max_age : BACKOFF_MAX;
    }
    if (delay > 0)
        defer((size_t)(lane - G.lanes), now + delay);
    else
        send_request(lane, now);
}

static int blank(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The next `"payload": "` member from p: its string's first octet, or NULL. */
static const unsigned char *next_payload(const unsigned char *p,
                                         const unsigned char *end)
{
    static const char key[] = "\"payload\"";
    const size_t klen = sizeof key - 1;
    while (p < end) {
        const unsigned char *hit = memmem(p, (size_t)(end - p), key, klen);
        if (!hit)
            return NULL;
        p = hit + klen;
        while (p < end && blank(*p))
            p++;
        if (p == end || *p++ != ':')
            continue;
        while (p < end && blank(*p))
            p++;
        if (p < end && *p == '"')
            return p + 1;
    }
    return NULL;
}

/* Each stamp in a delivered MSG (one payload) or AGGMSG (several). */
static void on_payload(const unsigned char *body, size_t n)
{
    const unsigned char *p = body, *end = body + n;
    while ((p = next_payload(p, end))) {
        double sent_at;
        if (!stamp_decode(p, end, &sent_at))
            continue;
        G.c.arrived++;
        if (in_window(sent_at)) {
            G.c.received++;
            hist_add(&G.c.latency, g_rx - sent_at);
        }
    }
}

/* False for a retransmitted server POST: same Message ID and token. */
static int first_time(Lane *lane, const Message *m)
{
    if (!lane->seen)
        lane->seen = xalloc(SEEN_SLOTS * sizeof(Seen));
    Seen *s = &lane->seen[m->mid % SEEN_SLOTS];
    int same_mid = s->used && s->mid == m->mid;
    if (same_mid && s->tkl == m->tkl && !memcmp(s->token, m->token, (size_t)m->tkl))
        return 0;
    if (same_mid)
        G.c.mid_reused++;
    s->used = 1;
    s->mid = m->mid;
    s->tkl = (uint8_t)m->tkl;
    memcpy(s->token, m->token, (size_t)m->tkl);
    return 1;
}

static void acknowledge(Lane *lane, const Message *m)
{
    unsigned char r[12];
    size_t len = 4;
    r[2] = (unsigned char)(m->mid >> 8);
    r[3] = (unsigned char)m->mid;
    if (m->code == 0) { /* CoAP ping: RST (RFC 7252 section 4.3) */
        r[0] = 0x70;
        r[1] = 0;
    } else if (m->code == 0x02) { /* POST: piggybacked 2.04 Changed */
        r[0] = (unsigned char)(0x60 | m->tkl);
        r[1] = 0x44;
        memcpy(r + 4, m->token, (size_t)m->tkl);
        len += (size_t)m->tkl;
    } else {
        r[0] = 0x60;
        r[1] = 0;
    }
    xsend(lane->fd, r, len);
}

static Entry *by_token(Lane *lane, const Message *m)
{
    if (m->tkl != 4)
        return NULL;
    uint32_t token = (uint32_t)m->token[0] << 24 | (uint32_t)m->token[1] << 16 |
                     (uint32_t)m->token[2] << 8 | m->token[3];
    Entry *e = &lane->tab[token & lane->mask];
    return e->active && e->token == token ? e : NULL;
}

static void on_datagram(Lane *lane, const unsigned char *b, size_t n, double now)
{
    Message m;
    if (!coap_parse(b, n, &m)) {
        G.c.bad++;
        return;
    }
    if (m.type == 2 || m.type == 3) { /* ACK, RST */
        Entry *e = &lane->tab[m.mid & lane->mask];
        if (!e->active || !e->mid_live || e->mid != m.mid)
            return;
        e->mid_live = 0;
        if (m.type == 2 && m.code == 0)
            e->acked = 1; /* a separate response follows (section 5.2.2) */
        else
            finish(lane, e, &m, now);
        return;
    }
    if (m.type == 0)
        acknowledge(lane, &m);
    if ((m.code >> 5) == 0) { /* a request: the server delivers a message */
        if (m.code == 0x02 && m.payload_len && first_time(lane, &m))
            on_payload(m.payload, m.payload_len);
        return;
    }
    Entry *e = by_token(lane, &m);
    if (e)
        finish(lane, e, &m, now); /* a separate response */
    else if (m.payload_len)
        on_payload(m.payload, m.payload_len);
}

/* ------------------------------------------------------------ the loop parts */

static void sweep(double now)
{
    for (size_t l = 0; l < G.nlanes; l++) {
        Lane *lane = &G.lanes[l];
        if (!lane->in_flight)
            continue;
        for (unsigned i = 0; i <= lane->mask; i++) {
            Entry *e = &lane->tab[i];
            if (!e->active || e->acked || e->due > now)
                continue;
            if (e->attempts >= MAX_RETRANSMIT) {
                finish(lane, e, NULL, now);
                continue;
            }
            e->attempts++;
            e->due = now + ACK_TIMEOUT * (double)(1 << e->attempts);
            xsend(lane->fd, e->dgram, e->len);
        }
    }
}

static void run_deferred(double now)
{
    while (G.defer_count && G.defer_at[G.defer_head] <= now) {
        size_t lane = G.defer_lane[G.defer_head];
        G.defer_head = (G.defer_head + 1) % G.defer_cap;
        G.defer_count--;
        if (now < G.t_end)
            send_request(&G.lanes[lane], now);
    }
}

static struct {
    double start;
    uint64_t issued;
    size_t turn;
} pace;

static void pace_step(double now)
{
    uint64_t target = (uint64_t)((now - pace.start) * G.rate);
    uint64_t due = target > pace.issued ? target - pace.issued : 0;
    pace.issued += due;
    for (uint64_t k = 0; k < due; k++) {
        size_t tries;
        for (tries = 0; tries < G.nlanes; tries++) {
            pace.turn = (pace.turn + 1) % G.nlanes;
            if (G.lanes[pace.turn].in_flight < G.window) {
                send_request(&G.lanes[pace.turn], now);
                break;
            }
        }
        if (tries == G.nlanes && now >= G.t0)
            G.c.behind++;
    }
}

/* One datagram per readiness: epoll is level-triggered, so a socket with more
 * queued is reported again by the next epoll_wait. One recv per datagram is
 * the fewest system calls (a loop until EAGAIN, or recvmmsg, costs one more
 * attempt per readiness, and lanes rarely hold two datagrams at once). */
static void receive(Lane *lane)
{
    static unsigned char buf[RECV_MAX];
    static union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(struct timespec))];
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    ssize_t got = recvmsg(lane->fd, &msg, MSG_DONTWAIT);
    if (got <= 0) /* EAGAIN, or an ICMP error: the sweep retransmits */
        return;
    double now = now_s();
    g_rx = now;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
        struct timespec ts;
        memcpy(&ts, CMSG_DATA(c), sizeof ts);
        double rx = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 - g_real_offset;
        if (rx <= now) /* a clock step would make it later: keep ours */
            g_rx = rx;
    }
    on_datagram(lane, buf, (size_t)got, now);
}

/* ------------------------------------------------------------ control */

static struct {
    char *buf;
    size_t len, cap;
    int eof;
} in;

/* One read(2) of stdin into the buffer (the end of input sets in.eof). */
static void fill(void)
{
    if (in.cap - in.len < 65536) {
        in.cap = in.cap ? in.cap * 2 : 1 << 20;
        in.buf = realloc(in.buf, in.cap);
        if (!in.buf)
            die("out of memory");
    }
    ssize_t got = read(0, in.buf + in.len, in.cap - in.len - 1);
    if (got > 0)
        in.len += (size_t)got;
    else if (got == 0 || errno != EINTR)
        in.eof = 1;
}

/* The next line of stdin (without its newline), or NULL: with `block`, at the
 * end of input; without, when no whole line is buffered. */
static char *read_line(int block)
{
    static size_t consumed;
    if (consumed) {
        memmove(in.buf, in.buf + consumed, in.len - consumed);
        in.len -= consumed;
        consumed = 0;
    }
    for (;;) {
        char *nl = in.len ? memchr(in.buf, '\n', in.len) : NULL;
        if (nl) {
            *nl = '\0';
            consumed = (size_t)(nl - in.buf) + 1;
            return in.buf;
        }
        if (!block || in.eof)
            return NULL;
        fill();
    }
}

static char *need_line(void)
{
    char *line = read_line(1);
    if (!line)
        die("the configuration on stdin ended before \"go\"");
    return line;
}

static void read_config(void)
{
    size_t cap = 0;
    char *line = need_line();
    if (strcmp(line, "coapgen 1") != 0)
        die("stdin does not start with \"coapgen 1\"");
    G.window = 1;
    G.size = 48;
    while (strcmp(line = need_line(), "go") != 0) {
        char key[16];
        double value;
        int fd;
        size_t count;
        unsigned mid;
        if (sscanf(line, "lane %d %zu %u", &fd, &count, &mid) == 3) {
            if (count < 1)
                die("a lane needs at least one body");
            if (G.nlanes == cap) {
                cap = cap ? cap * 2 : 64;
                G.lanes = realloc(G.lanes, cap * sizeof(Lane));
                if (!G.lanes)
                    die("out of memory");
            }
            Lane *lane = &G.lanes[G.nlanes++];
            memset(lane, 0, sizeof *lane);
            lane->fd = fd;
            lane->nbodies = count;
            lane->bodies = xalloc(count * sizeof(char *));
            lane->lens = xalloc(count * sizeof(size_t));
            size_t longest = 0;
            for (size_t i = 0; i < count; i++) {
                char *body = need_line();
                lane->lens[i] = strlen(body);
                lane->bodies[i] = xalloc(lane->lens[i] + 1);
                memcpy(lane->bodies[i], body, lane->lens[i]);
                if (lane->lens[i] > longest)
                    longest = lane->lens[i];
            }
            if (G.mode == P2P)
                longest = p2p_max_body(longest);
            lane_init(lane, longest, mid);
        } else if (strncmp(line, "mode ", 5) == 0) {
            if (G.nlanes)
                die("mode must come before the lanes");
            if (strcmp(line + 5, "p2p") == 0)
                G.mode = P2P;
            else if (strcmp(line + 5, "reg") == 0)
                G.mode = REG;
            else
                die("mode must be p2p or reg");
        } else if (sscanf(line, "%15s %lf", key, &value) == 2) {
            if (G.nlanes)
                die("settings must come before the lanes");
            if (!strcmp(key, "window") && value >= 1 && value <= 65536)
                G.window = (int)value;
            else if (!strcmp(key, "rate") && value >= 0)
                G.rate = value;
            else if (!strcmp(key, "size") && value >= 8 && value <= 4000)
                G.size = (int)value;
            else if (!strcmp(key, "store"))
                G.store = value != 0;
            else if (!strcmp(key, "t0"))
                G.t0 = value;
            else if (!strcmp(key, "t_end"))
                G.t_end = value;
            else
                die("unknown setting or value out of range");
        } else
            die("unreadable configuration line");
    }
    if (!G.nlanes)
        die("no lanes");
    G.defer_cap = 0;
    for (size_t l = 0; l < G.nlanes; l++)
        G.defer_cap += (size_t)G.lanes[l].mask + 1;
    G.defer_lane = xalloc(G.defer_cap * sizeof(size_t));
    G.defer_at = xalloc(G.defer_cap * sizeof(double));
}

static void print_live(void)
{
    char line[160];
    int n = snprintf(line, sizeof line, "live %llu %llu %llu %llu %llu\n",
                     (unsigned long long)G.c.sent, (unsigned long long)G.c.refused,
                     (unsigned long long)G.c.received, (unsigned long long)G.c.arrived,
                     (unsigned long long)G.c.timeouts);
    if (write(1, line, (size_t)n) < 0)
        die("stdout closed");
}

static void print_final(double cpu)
{
    unsigned long long unanswered = 0;
    for (size_t l = 0; l < G.nlanes; l++)
        unanswered += (unsigned long long)G.lanes[l].in_flight;
    printf("final {\"sent\":%llu,\"accepted\":%llu,\"refused\":%llu,"
           "\"received\":%llu,\"timeouts\":%llu,\"behind\":%llu,"
           "\"cpu_s\":%.9f,\"wall_s\":%.9f,\"latency\":",
           (unsigned long long)G.c.sent, (unsigned long long)G.c.accepted,
           (unsigned long long)G.c.refused, (unsigned long long)G.c.received,
           (unsigned long long)G.c.timeouts + unanswered,
           (unsigned long long)G.c.behind, cpu, G.t_end - G.t0);
    hist_print(stdout, &G.c.latency);
    fputs(",\"answer\":", stdout);
    hist_print(stdout, &G.c.answer);
    fputs(",\"extra\":{", stdout);
    if (G.c.mid_reused)
        printf("\"mid_reused\":%llu", (unsigned long long)G.c.mid_reused);
    fputs("},\"refusals\":{", stdout);
    for (size_t i = 0; i < G.c.ncauses; i++) /* keys: [A-Za-z0-9_. ] only */
        printf("%s\"%s\":%llu", i ? "," : "", G.c.cause[i],
               (unsigned long long)G.c.cause_n[i]);
    fputs("}}\n", stdout);
    fflush(stdout);
}

static int ms_until(double moment, double now)
{
    double ms = (moment - now) * 1e3;
    if (ms <= 0)
        return 0;
    return ms >= 50 ? 50 : (int)ceil(ms);
}

/* The moments the loop must wake for. */
typedef struct {
    double live, sweep, pace;
    int before_t0, before_end;
} Due;

/* epoll_wait's timeout (ms, at most 50): until the first thing due. */
static int next_timeout(const Due *due, double now)
{
    int timeout = ms_until(due->live, now), t = ms_until(due->sweep, now);
    timeout = t < timeout ? t : timeout;
    if (G.rate > 0 && now < G.t_end) {
        t = ms_until(due->pace, now);
        timeout = t < timeout ? t : timeout;
    }
    if (G.defer_count) {
        t = ms_until(G.defer_at[G.defer_head], now);
        timeout = t < timeout ? t : timeout;
    }
    if (due->before_t0 || due->before_end) {
        t = ms_until(due->before_t0 ? G.t0 : G.t_end, now);
        timeout = t < timeout ? t : timeout;
    }
    return timeout;
}

static int run(void)
{
    read_config();
    tail_init();
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1 failed");
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u64 = UINT64_MAX; /* stdin */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0)
        die("cannot watch stdin");
    for (size_t l = 0; l < G.nlanes; l++) {
        ev.data.u64 = l;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, G.lanes[l].fd, &ev) < 0)
            die("cannot watch a lane's socket");
    }
    real_offset_update();
    double now = now_s();
    pace.start = now;
    if (G.rate <= 0)
        for (size_t l = 0; l < G.nlanes; l++)
            for (int k = 0; k < G.window; k++)
                send_request(&G.lanes[l], now);
    double next_live = now, next_sweep = now + SWEEP_EVERY, next_pace = now;
    double cpu0 = 0, cpu = 0;
    int before_t0 = 1, before_end = 1, stopping = 0;
    struct epoll_event events[256];
    while (!stopping) {
        Due due = {next_live, next_sweep, next_pace, before_t0, before_end};
        int timeout = next_timeout(&due, now);
        if (timeout > 0) { /* nothing due: let datagrams gather (see NAP_NS) */
            struct timespec nap = {0, NAP_NS};
            nanosleep(&nap, NULL);
            now = now_s();
            timeout = next_timeout(&due, now);
        }
        int n = epoll_wait(ep, events, 256, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait failed");
        for (int i = 0; i < n; i++) {
            if (events[i].data.u64 == UINT64_MAX) {
                char *line;
                fill();
                while ((line = read_line(0)))
                    if (strcmp(line, "stop") == 0)
                        stopping = 1;
                if (in.eof) /* no "stop" will come: the parent is gone */
                    stopping = 1;
            } else
                receive(&G.lanes[events[i].data.u64]);
        }
        now = now_s();
        if (before_t0 && now >= G.t0) {
            before_t0 = 0;
            cpu0 = cpu_s();
        }
        if (!before_t0 && before_end && now >= G.t_end) {
            before_end = 0;
            cpu = cpu_s() - cpu0;
        }
        if (G.rate > 0 && now < G.t_end && now >= next_pace) {
            pace_step(now);
            next_pace = now + 0.001;
        }
        run_deferred(now);
        if (now >= next_sweep) {
            real_offset_update();
            sweep(now);
            next_sweep = now + SWEEP_EVERY;
        }
        if (now >= next_live) {
            print_live();
            next_live = now + LIVE_EVERY;
        }
    }
    if (before_end) /* stopped before the window closed */
        cpu = before_t0 ? 0.0 : cpu_s() - cpu0;
    print_final(cpu);
    return 0;
}

/* ------------------------------------------------------------ self-tests */

static int selftest_histogram(void)
{
    static Histogram h;
    char *line;
    while ((line = read_line(1)))
        if (*line)
            hist_add(&h, strtod(line, NULL));
    hist_print(stdout, &h);
    putchar('\n');
    return 0;
}

static int selftest_body(void)
{
    char *line;
    static char out[12000];
    while ((line = read_line(1))) {
        int size, store, used = 0;
        unsigned long long serial;
        double at;
        if (sscanf(line, "%d %d %llu %lf %n", &size, &store, &serial, &at, &used) < 4 ||
            size < 8 || size > 4000)
            die("selftest-body: SIZE STORE SERIAL SENT_AT PREFIX");
        G.size = size;
        G.store = store;
        tail_init();
        size_t n = p2p_body(out, line + used, strlen(line + used), serial, at);
        fwrite(out, 1, n, stdout);
        putchar('\n');
    }
    return 0;
}

static int selftest_payloads(void)
{
    char *line;
    G.t0 = -INFINITY;
    G.t_end = INFINITY;
    while ((line = read_line(1))) {
        const unsigned char *p = (const unsigned char *)line, *end = p + strlen(line);
        const char *sep = "";
        while ((p = next_payload(p, end))) {
            double sent_at;
            if (stamp_decode(p, end, &sent_at)) {
                printf("%s%.17g", sep, sent_at);
                sep = " ";
            }
        }
        putchar('\n');
    }
    return 0;
}

int main(int argc, char **argv)
{
    g_scale = PER_DECADE / log(10.0);
    memset(B64_VALUE, -1, sizeof B64_VALUE);
    for (int i = 0; i < 64; i++)
        B64_VALUE[(unsigned char)B64[i]] = (signed char)i;
    if (argc == 2 && !strcmp(argv[1], "--selftest-histogram"))
        return selftest_histogram();
    if (argc == 2 && !strcmp(argv[1], "--selftest-body"))
        return selftest_body();
    if (argc == 2 && !strcmp(argv[1], "--selftest-payloads"))
        return selftest_payloads();
    if (argc != 1) {
        fprintf(stderr, "usage: coapgen < config (see the top of coapgen.c)\n");
        return 2;
    }
    return run();
}
