/*
 * Optional accelerator for dnsmaster.core.compiler: the per-line work of the
 * tinydns-data compiler for well-formed lines, in C.
 *
 * run(lines, start, check, default_soa, keys, values, stamped, soa_defaults) -> int
 *
 * Compiles lines[start:] in order, appending records exactly as the pure-Python
 * compiler does (spec sections cited as in compiler.py), and stops at the first
 * line it does not fully handle, returning that line's index (or len(lines) when
 * every line was done). It handles a line only when it is certain of the result:
 * any backslash, an unknown leading byte, a name over the DNS limits, a prohibited
 * generic type, an SRV line without a port, or a line that is not bytes is left to
 * the Python code, which compiles it (or raises the error) and calls run() again
 * from the next line. A line handed back has added nothing to the lists.
 *
 * Each line is stripped of trailing spaces, tabs and LFs first (2.2).
 *
 * With check true, the checker is on too (lint.Linter): a line it might have
 * something to say about (a CR, extra fields, an odd address, number, timestamp,
 * location or prefix) is handed back as well, so every line that stays in C is one
 * the checker would pass in silence.
 *
 * TYPES mirrors linetypes.LINE_TYPES: one function per line type and the shape of
 * its fields, which the checker's tests read.
 *
 * default_soa is the 20 bytes of default SOA numbers (serial first, spec 3.8).
 *
 * run_text(data, pos, index, check, default_soa, keys, values, stamped, soa_defaults,
 *          stamped_at, blob, serials) -> (pos, index, records)
 *
 * The same over a whole data text from offset pos (line index), cutting the lines
 * itself; returns where the first line left to Python starts, its index (pos >=
 * len(data): all done) and how many records were added. stamped_at, a list or None,
 * gets the offset of each line that goes into stamped. With blob (a bytearray, else
 * None) the records are appended to it packed, in cdb's record layout, instead of to
 * keys and values, and serials gets the offset in blob of each default serial
 * (soa_defaults is then left alone); the GIL is released while it packs.
 *
 * Stream(fd): the drop-in's way, tinydns-data's own: Stream.run_text compiles a
 * chunk of the data straight into a cdb being written to fd through cdbmake.h (no
 * record kept, only its hash and position), add() puts Python's records between,
 * finish() writes the tables and the header. See the Stream section below.
 *
 * scan(content, mark), expand(content, origin, stamped, starts, long_lines)
 *
 * make-data's per-line work on a whole source, each in one pass without the GIL, so
 * two sources compile on two cores: scan finds the serial mark, the IPv6 patch's
 * lines and the line count; expand writes the source as it goes into data (each .
 * line as its Z, & and + lines, each Z line without a serial given one), cut where
 * the serial goes. dot_line is the same for one . line.
 *
 * write_cdb(fd, keys, values) -> None
 *
 * Writes the cdb of dnsmaster.core.cdb.dumps(keys, values) to fd (spec 8), through
 * the one cdb_make of cdbmake.h, which _cdbblob.c shares.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "cdbmake.h"

#define NFIELDS 15
#define WIRE_MAX 255

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
} span;

typedef struct {
    unsigned char b[WIRE_MAX + 1];
    int n;
} wire;

typedef struct {
    PyObject *keys;
    PyObject *values;
    unsigned char *buf; /* scratch for one value */
    Py_ssize_t cap;
    /* Packing (blob not NULL): records go into pk in cdb's record layout instead of
     * the lists, and reach blob (a bytearray) in one piece when the call ends. */
    PyObject *blob;
    PyObject *serials; /* offsets in blob of the default serials */
    unsigned char *pk;
    Py_ssize_t pkn, pkcap, base; /* base: the size of blob when the call began */
    Py_ssize_t count;            /* records added by this call */
    int pending;                 /* the next record's serial is a default one */
    /* While packing, no Python object is touched (the GIL is released): the
     * serials' offsets and the stamped lines (index, offset) wait here. */
    Py_ssize_t *offs, noffs, capoffs;
    Py_ssize_t *marks, nmarks, capmarks;
    int nomem; /* an allocation failed without the GIL */
    int nogil; /* the GIL is released: no Python object may be touched */
    /* Streaming (stream not NULL): records go straight into a cdb writer. */
    struct stream *stream;
} out;

/* A cdb being written as the records come (Stream below): the records go through
 * cdb_make's buffer to the file at once; only each one's (hash, position) stays. */
typedef struct stream {
    cdbmake w;
    cdbmake_entry *ent;
    size_t n, cap;
    uint64_t pos; /* where the next record starts */
} stream;

/* Start the write-out of fd's dirty pages; advisory, so errors (a pipe, an old
 * kernel) are no concern. Without the GIL. */
static void
start_writeback(int fd)
{
#ifdef SYNC_FILE_RANGE_WRITE
    (void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd;
#endif
}

/* One entry more for a record at s->pos; -1 with w.err set. */
static int
stream_entry(stream *s, uint32_t h)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1 << 16;
        cdbmake_entry *e = PyMem_RawRealloc(s->ent, (cap + 1) * sizeof *e);
        if (e == NULL) {
            s->w.err = CDBMAKE_NO_MEMORY;
            return -1;
        }
        s->ent = e;
        s->cap = cap;
    }
    s->ent[s->n].h = h;
    s->ent[s->n].p = (uint32_t)s->pos;
    s->n++;
    return 0;
}

/* 8.3: one record through the writer, its entry kept; -1 with w.err set. */
static int
stream_put(stream *s, const unsigned char *key, Py_ssize_t kn, const unsigned char *v,
           Py_ssize_t vn)
{
    uint64_t next = s->pos + 8 + (uint64_t)kn + (uint64_t)vn;
    if (!cdbmake_fits(next, (uint64_t)s->n + 1)) {
        s->w.err = CDBMAKE_TOO_LARGE;
        return -1;
    }
    if (stream_entry(s, cdb_hash(key, (size_t)kn)) < 0)
        return -1;
    unsigned char rec[8];
    cdb_put_le32(rec, (uint32_t)kn);
    cdb_put_le32(rec + 4, (uint32_t)vn);
    if (cdbmake_put(&s->w, rec, 8) < 0 || cdbmake_put(&s->w, key, (size_t)kn) < 0 ||
        cdbmake_put(&s->w, v, (size_t)vn) < 0)
        return -1;
    s->pos = next;
    return 0;
}

/* Append v to a growable array (raw memory: no GIL needed); -1 when out of memory. */
static int
push(Py_ssize_t **a, Py_ssize_t *n, Py_ssize_t *cap, Py_ssize_t v)
{
    if (*n == *cap) {
        Py_ssize_t c = *cap ? *cap * 2 : 256;
        Py_ssize_t *b = PyMem_RawRealloc(*a, (size_t)c * sizeof *b);
        if (b == NULL)
            return -1;
        *a = b;
        *cap = c;
    }
    (*a)[(*n)++] = v;
    return 0;
}

/* Out of memory: an exception now when the GIL is held (not packing), else later. */
static int
no_memory(out *o)
{
    if (!o->nogil)
        PyErr_NoMemory();
    else
        o->nomem = 1;
    return -1;
}

/* 2.3: the fields after the leading byte; missing ones are empty. */
static void
split_fields(const unsigned char *line, Py_ssize_t len, span *f)
{
    Py_ssize_t pos = 1;
    for (int i = 0; i < NFIELDS; i++) {
        if (pos >= len) {
            f[i].p = line + len;
            f[i].n = 0;
            continue;
        }
        const unsigned char *start = line + pos;
        const unsigned char *colon = memchr(start, ':', (size_t)(len - pos));
        Py_ssize_t k = colon ? (Py_ssize_t)(colon - line) : len;
        f[i].p = start;
        f[i].n = k - pos;
        pos = k + 1;
    }
}

/* 3.1: leading decimal digits, wrapping mod 2**64; returns whether any. */
static int
number(span f, uint64_t *v)
{
    uint64_t x = 0;
    Py_ssize_t i = 0;
    while (i < f.n && f.p[i] >= '0' && f.p[i] <= '9') {
        x = x * 10 + (uint64_t)(f.p[i] - '0');
        i++;
    }
    *v = x;
    return i > 0;
}

/* 3.2: four dotted numbers at the start of the field; returns whether present. */
static int
ip4(span f, unsigned char *ip)
{
    Py_ssize_t i = 0;
    for (int k = 0; k < 4; k++) {
        if (k) {
            if (i >= f.n || f.p[i] != '.')
                return 0;
            i++;
        }
        Py_ssize_t s = i;
        uint64_t x = 0;
        while (i < f.n && f.p[i] >= '0' && f.p[i] <= '9') {
            x = x * 10 + (uint64_t)(f.p[i] - '0');
            i++;
        }
        if (i == s)
            return 0;
        ip[k] = (unsigned char)(x & 255);
    }
    return 1;
}

/* 3.3: 16 nibbles of lowercase hex, anything else 0. */
static void
ttd(span f, unsigned char *t)
{
    memset(t, 0, 8);
    Py_ssize_t n = f.n < 16 ? f.n : 16;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = f.p[i];
        unsigned v = 0;
        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        t[i >> 1] |= (unsigned char)((i & 1) ? v : v << 4);
    }
}

/* 3.4: the location; returns 0 for "no location" (empty, or two NULs). */
static int
loc(span f, unsigned char *lo)
{
    lo[0] = f.n > 0 ? f.p[0] : 0;
    lo[1] = f.n > 1 ? f.p[1] : 0;
    return lo[0] || lo[1];
}

/* 3.5 without escapes: the concatenation of up to three pieces as a wire name.
 * Returns 0 when the name breaks a DNS limit (the Python code says how). */
static int
to_wire(const span *parts, int nparts, wire *w)
{
    int n = 0;
    int lab = -1; /* position of the current label's length byte */
    int labn = 0;
    for (int k = 0; k < nparts; k++) {
        const unsigned char *p = parts[k].p, *end = p + parts[k].n;
        while (p < end) {
            const unsigned char *dot = memchr(p, '.', (size_t)(end - p));
            const unsigned char *stop = dot ? dot : end;
            int m = (int)(stop - p);
            if (m) {
                if (!labn) {
                    if (n >= WIRE_MAX - 1)
                        return 0;
                    lab = n++;
                }
                if (labn + m > 63 || n + m > WIRE_MAX - 1)
                    return 0;
                memcpy(w->b + n, p, (size_t)m);
                n += m;
                labn += m;
            }
            if (dot == NULL)
                break;
            if (labn) { /* a dot ends a label; empty labels vanish */
                w->b[lab] = (unsigned char)labn;
                labn = 0;
            }
            p = dot + 1;
        }
    }
    if (labn)
        w->b[lab] = (unsigned char)labn;
    w->b[n++] = 0;
    w->n = n;
    return 1;
}

static int
name(span f, wire *w)
{
    return to_wire(&f, 1, w);
}

/* 5.1: x, or x + suffix + fqdn when x has no dot. */
static int
server(span x, const char *suffix, span fqdn, wire *w)
{
    if (x.n && memchr(x.p, '.', (size_t)x.n))
        return to_wire(&x, 1, w);
    span parts[3] = {x, {(const unsigned char *)suffix, (Py_ssize_t)strlen(suffix)}, fqdn};
    return to_wire(parts, 3, w);
}

static int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

static int
reserve(out *o, Py_ssize_t need)
{
    if (need <= o->cap)
        return 0;
    Py_ssize_t cap = o->cap * 2 > need ? o->cap * 2 : need;
    unsigned char *b = PyMem_RawRealloc(o->buf, (size_t)cap);
    if (b == NULL)
        return no_memory(o);
    o->buf = b;
    o->cap = cap;
    return 0;
}

/* key -> value into the lists, or packed (8.3: klen, dlen, key, data). */
static int
add_record(out *o, const unsigned char *key, Py_ssize_t kn, const unsigned char *v,
           Py_ssize_t vn)
{
    o->count++;
    if (o->stream != NULL)
        return stream_put(o->stream, key, kn, v, vn);
    if (o->blob == NULL) {
        if (append_new(o->keys, PyBytes_FromStringAndSize((const char *)key, kn)) < 0)
            return -1;
        return append_new(o->values, PyBytes_FromStringAndSize((const char *)v, vn));
    }
    Py_ssize_t need = o->pkn + 8 + kn + vn;
    if (need > o->pkcap) {
        Py_ssize_t cap = o->pkcap * 2 > need ? o->pkcap * 2 : need + (1 << 16);
        unsigned char *b = PyMem_RawRealloc(o->pk, (size_t)cap);
        if (b == NULL)
            return no_memory(o);
        o->pk = b;
        o->pkcap = cap;
    }
    unsigned char *d = o->pk + o->pkn;
    cdb_put_le32(d, (uint32_t)kn);
    cdb_put_le32(d + 4, (uint32_t)vn);
    memcpy(d + 8, key, (size_t)kn);
    memcpy(d + 8 + kn, v, (size_t)vn);
    o->pkn = need;
    if (o->pending) { /* an SOA's data ends in its five numbers, the serial first */
        o->pending = 0;
        if (push(&o->offs, &o->noffs, &o->capoffs, o->base + need - 20) < 0)
            return no_memory(o);
    }
    return 0;
}

/* The records packed by this call, onto the end of blob. */
static int
flush_packed(out *o)
{
    if (o->blob == NULL)
        return 0;
    if (o->nomem) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < o->noffs; i++)
        if (append_new(o->serials, PyLong_FromSsize_t(o->offs[i])) < 0)
            return -1;
    o->noffs = 0;
    if (o->pkn == 0)
        return 0;
    Py_ssize_t at = PyByteArray_GET_SIZE(o->blob);
    if (at != o->base) {
        PyErr_SetString(PyExc_RuntimeError, "blob changed during the call");
        return -1;
    }
    if (PyByteArray_Resize(o->blob, at + o->pkn) < 0)
        return -1;
    if (o->pkn < (1 << 20)) {
        memcpy(PyByteArray_AS_STRING(o->blob) + at, o->pk, (size_t)o->pkn);
        o->pkn = 0;
        return 0;
    }
    /* A source's whole records (100 MB for 1M lines): copied, and the new pages
     * faulted in, without the GIL, which the build's other compile thread wants.
     * The buffer held meanwhile keeps anyone from resizing blob. */
    Py_buffer view;
    if (PyObject_GetBuffer(o->blob, &view, PyBUF_WRITABLE) < 0)
        return -1;
    Py_BEGIN_ALLOW_THREADS
    memcpy((unsigned char *)view.buf + at, o->pk, (size_t)o->pkn);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    o->pkn = 0;
    return 0;
}

/* 4.1/4.2: one record; the key is the lowercased owner, a leading "*" label moves
 * into the marker. rdata is up to three pieces. head is TTL + ttd (12 bytes). */
static int
emit(out *o, unsigned rtype, const wire *owner, const unsigned char *head, int has_loc,
     const unsigned char *lo, const unsigned char *r1, Py_ssize_t n1,
     const unsigned char *r2, Py_ssize_t n2, const unsigned char *r3, Py_ssize_t n3)
{
    unsigned char key[WIRE_MAX + 1];
    int wild = owner->n >= 2 && owner->b[0] == 1 && owner->b[1] == '*';
    int skip = wild ? 2 : 0;
    int kn = owner->n - skip;
    for (int i = 0; i < kn; i++) {
        unsigned char c = owner->b[i + skip];
        key[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    Py_ssize_t vn = 3 + (has_loc ? 2 : 0) + 12 + n1 + n2 + n3;
    if (reserve(o, vn) < 0)
        return -1;
    unsigned char *v = o->buf;
    v[0] = (unsigned char)(rtype >> 8);
    v[1] = (unsigned char)rtype;
    v[2] = has_loc ? (wild ? '+' : '>') : (wild ? '*' : '=');
    Py_ssize_t i = 3;
    if (has_loc) {
        v[i++] = lo[0];
        v[i++] = lo[1];
    }
    memcpy(v + i, head, 12);
    i += 12;
    if (n1) {
        memcpy(v + i, r1, (size_t)n1);
        i += n1;
    }
    if (n2) {
        memcpy(v + i, r2, (size_t)n2);
        i += n2;
    }
    if (n3) {
        memcpy(v + i, r3, (size_t)n3);
        i += n3;
    }
    return add_record(o, key, kn, v, i);
}

/* Numbers inside a record's data are in DNS order, big-endian; cdb's own words
 * (lengths, hashes, positions) are little-endian, in cdbmake.h. */
static void
put_be32(unsigned char *p, uint64_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void
put_be16(unsigned char *p, uint64_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

/* TTL (field, or default) and ttd into a 12-byte head. */
static void
make_head(unsigned char *head, span ttl_field, uint64_t dflt, span ttd_field)
{
    uint64_t ttl;
    if (!number(ttl_field, &ttl))
        ttl = dflt;
    put_be32(head, ttl);
    ttd(ttd_field, head + 4);
}

static const unsigned char HOSTMASTER[] = "\x0ahostmaster";
static const unsigned char IN_ADDR_ARPA[] = "\x07in-addr\x04" "arpa";

static int
append_index(PyObject *list, Py_ssize_t i)
{
    return append_new(list, PyLong_FromSsize_t(i));
}

/* ---- one function per line type, as LINE_TYPES in linetypes.py ----
 *
 * Each compiles one line from its fields (2.3) and returns 1 when done, 0 to hand
 * the line to Python (nothing added yet), -1 on a Python error. */

typedef struct {
    out o;
    const unsigned char *default_soa; /* 20 bytes, serial first (3.8) */
    PyObject *stamped;
    PyObject *soa_defaults;
    PyObject *stamped_at; /* a list, or NULL */
    Py_ssize_t index;     /* of the line being compiled */
    Py_ssize_t pos;       /* where it starts in the text (run_text) */
} ctx;

/* The line takes the default serial, in the SOA record emitted next. */
static int
stamp(ctx *c)
{
    out *o = &c->o;
    if (o->stream != NULL) /* the serial is in the record: nobody needs to know */
        return 0;
    if (o->blob != NULL) { /* packing, without the GIL: the lists get them later */
        o->pending = 1;
        if (push(&o->marks, &o->nmarks, &o->capmarks, c->index) < 0 ||
            push(&o->marks, &o->nmarks, &o->capmarks, c->pos) < 0)
            return no_memory(o);
        return 0;
    }
    if (append_index(c->stamped, c->index) < 0 ||
        append_index(c->soa_defaults, PyList_GET_SIZE(o->keys)) < 0 ||
        (c->stamped_at && append_index(c->stamped_at, c->pos) < 0))
        return -1;
    return 0;
}

/* 5.5: the A record of a + or = line; 2 when it has none (no address). */
static int
address(ctx *c, const span *f, wire *owner, unsigned char *head, int *has_loc,
        unsigned char *lo, unsigned char *ip)
{
    if (!name(f[0], owner))
        return 0;
    make_head(head, f[2], 86400, f[3]);
    *has_loc = loc(f[4], lo);
    if (!ip4(f[1], ip))
        return 2;
    return emit(&c->o, 1, owner, head, *has_loc, lo, ip, 4, NULL, 0, NULL, 0) < 0 ? -1 : 1;
}

static int
h_host(ctx *c, const span *f) /* + */
{
    wire owner;
    unsigned char head[12], lo[2], ip[4];
    int has_loc;
    int rc = address(c, f, &owner, head, &has_loc, lo, ip);
    return rc == 2 ? 1 : rc;
}

static int
h_host_and_ptr(ctx *c, const span *f) /* = */
{
    wire owner, rev;
    unsigned char head[12], lo[2], ip[4];
    int has_loc;
    int rc = address(c, f, &owner, head, &has_loc, lo, ip);
    if (rc != 1)
        return rc == 2 ? 1 : rc;
    int n = 0;
    for (int k = 3; k >= 0; k--) { /* the address bytes in decimal, last first */
        unsigned v = ip[k];
        int dn = v >= 100 ? 3 : v >= 10 ? 2 : 1;
        rev.b[n++] = (unsigned char)dn;
        for (int d = dn - 1; d >= 0; d--, v /= 10)
            rev.b[n + d] = (unsigned char)('0' + v % 10);
        n += dn;
    }
    memcpy(rev.b + n, IN_ADDR_ARPA, sizeof IN_ADDR_ARPA); /* with the final NUL */
    rev.n = n + (int)sizeof IN_ADDR_ARPA;
    return emit(&c->o, 12, &rev, head, has_loc, lo, owner.b, owner.n, NULL, 0, NULL, 0) < 0
               ? -1
               : 1;
}

/* 5.2, 5.3: SOA (for a . line), NS and the server's A. */
static int
name_server(ctx *c, const span *f, int soa)
{
    wire owner, target;
    unsigned char head[12], lo[2], ip[4];
    if (!name(f[0], &owner) || !server(f[2], ".ns.", f[0], &target))
        return 0;
    uint64_t ttl;
    if (!number(f[3], &ttl))
        ttl = 259200;
    put_be32(head, ttl);
    ttd(f[4], head + 4);
    int has_loc = loc(f[5], lo);
    if (soa) {
        unsigned char soa_head[12];
        put_be32(soa_head, ttl ? 2560 : 0);
        memcpy(soa_head + 4, head + 4, 8);
        if (stamp(c) < 0)
            return -1;
        /* rname: "hostmaster" + fqdn, not length-checked (5.2); then the numbers */
        unsigned char rdata[sizeof HOSTMASTER - 1 + WIRE_MAX + 20];
        Py_ssize_t rn = 0;
        memcpy(rdata, HOSTMASTER, sizeof HOSTMASTER - 1);
        rn += sizeof HOSTMASTER - 1;
        memcpy(rdata + rn, owner.b, (size_t)owner.n);
        rn += owner.n;
        memcpy(rdata + rn, c->default_soa, 20);
        rn += 20;
        if (emit(&c->o, 6, &owner, soa_head, has_loc, lo, target.b, target.n, rdata, rn,
                 NULL, 0) < 0)
            return -1;
    }
    if (emit(&c->o, 2, &owner, head, has_loc, lo, target.b, target.n, NULL, 0, NULL, 0) < 0)
        return -1;
    if (ip4(f[1], ip) &&
        emit(&c->o, 1, &target, head, has_loc, lo, ip, 4, NULL, 0, NULL, 0) < 0)
        return -1;
    return 1;
}

static int
h_zone(ctx *c, const span *f) /* . */
{
    return name_server(c, f, 1);
}

static int
h_delegation(ctx *c, const span *f) /* & */
{
    return name_server(c, f, 0);
}

static int
h_mail(ctx *c, const span *f) /* @, 5.6 */
{
    wire owner, target;
    unsigned char head[12], lo[2], ip[4], dist[2];
    uint64_t v;
    if (!name(f[0], &owner) || !server(f[2], ".mx.", f[0], &target))
        return 0;
    make_head(head, f[4], 86400, f[5]);
    int has_loc = loc(f[6], lo);
    if (!number(f[3], &v))
        v = 0;
    put_be16(dist, v);
    if (emit(&c->o, 15, &owner, head, has_loc, lo, dist, 2, target.b, target.n, NULL, 0) < 0)
        return -1;
    if (ip4(f[1], ip) &&
        emit(&c->o, 1, &target, head, has_loc, lo, ip, 4, NULL, 0, NULL, 0) < 0)
        return -1;
    return 1;
}

/* 5.8: a CNAME or a PTR. */
static int
pointer(ctx *c, const span *f, unsigned rtype)
{
    wire owner, target;
    unsigned char head[12], lo[2];
    if (!name(f[0], &owner) || !name(f[1], &target))
        return 0;
    make_head(head, f[2], 86400, f[3]);
    int has_loc = loc(f[4], lo);
    return emit(&c->o, rtype, &owner, head, has_loc, lo, target.b, target.n, NULL, 0, NULL,
                0) < 0
               ? -1
               : 1;
}

static int
h_alias(ctx *c, const span *f) /* C */
{
    return pointer(c, f, 5);
}

static int
h_reverse(ctx *c, const span *f) /* ^ */
{
    return pointer(c, f, 12);
}

static int
h_txt(ctx *c, const span *f) /* ', 5.7: strings of up to 127 bytes */
{
    wire owner;
    unsigned char head[12], lo[2];
    if (!name(f[0], &owner))
        return 0;
    make_head(head, f[2], 86400, f[3]);
    int has_loc = loc(f[4], lo);
    span t = f[1];
    if (t.n <= 127) {
        unsigned char one = (unsigned char)t.n;
        return emit(&c->o, 16, &owner, head, has_loc, lo, &one, t.n ? 1 : 0, t.p, t.n, NULL,
                    0) < 0
                   ? -1
                   : 1;
    }
    Py_ssize_t rn = t.n + (t.n + 126) / 127;
    unsigned char *rdata = PyMem_RawMalloc((size_t)rn);
    if (rdata == NULL)
        return no_memory(&c->o);
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < t.n; i += 127) {
        Py_ssize_t k = t.n - i < 127 ? t.n - i : 127;
        rdata[j++] = (unsigned char)k;
        memcpy(rdata + j, t.p + i, (size_t)k);
        j += k;
    }
    int rc = emit(&c->o, 16, &owner, head, has_loc, lo, rdata, j, NULL, 0, NULL, 0);
    PyMem_RawFree(rdata);
    return rc < 0 ? -1 : 1;
}

static int
h_soa(ctx *c, const span *f) /* Z, 5.4 */
{
    static const uint64_t defaults[4] = {16384, 2048, 1048576, 2560};
    wire owner, mname, rname;
    unsigned char head[12], lo[2], numbers[20];
    uint64_t v;
    if (!name(f[0], &owner) || !name(f[1], &mname) || !name(f[2], &rname))
        return 0;
    if (number(f[3], &v))
        put_be32(numbers, v);
    else {
        memcpy(numbers, c->default_soa, 4);
        if (stamp(c) < 0)
            return -1;
    }
    for (int k = 0; k < 4; k++) {
        if (!number(f[4 + k], &v))
            v = defaults[k];
        put_be32(numbers + 4 + 4 * k, v);
    }
    make_head(head, f[8], 2560, f[9]);
    int has_loc = loc(f[10], lo);
    return emit(&c->o, 6, &owner, head, has_loc, lo, mname.b, mname.n, rname.b, rname.n,
                numbers, 20) < 0
               ? -1
               : 1;
}

static int
h_generic(ctx *c, const span *f) /* :, 5.9 */
{
    wire owner;
    unsigned char head[12], lo[2];
    uint64_t v;
    if (!name(f[0], &owner))
        return 0;
    number(f[1], &v);
    unsigned rtype = (unsigned)(v & 0xFFFF);
    switch (rtype) {
    case 252: case 0: case 6: case 2: case 5: case 12: case 15:
        return 0; /* prohibited: Python raises the error */
    default:
        break;
    }
    make_head(head, f[3], 86400, f[4]);
    int has_loc = loc(f[5], lo);
    return emit(&c->o, rtype, &owner, head, has_loc, lo, f[2].p, f[2].n, NULL, 0, NULL, 0) < 0
               ? -1
               : 1;
}

static int
h_client_location(ctx *c, const span *f) /* %, 5.10: key \0% + prefix (3.7), value lo */
{
    span p = f[1];
    unsigned char lo[2];
    Py_ssize_t i = 0, kn = 2;
    unsigned char *key = PyMem_RawMalloc((size_t)p.n + 2);
    if (key == NULL)
        return no_memory(&c->o);
    key[0] = 0;
    key[1] = '%';
    for (;;) {
        while (i < p.n && p.p[i] == '.')
            i++;
        Py_ssize_t s = i;
        uint64_t x = 0;
        while (i < p.n && p.p[i] >= '0' && p.p[i] <= '9') {
            x = x * 10 + (uint64_t)(p.p[i] - '0');
            i++;
        }
        if (i == s)
            break;
        key[kn++] = (unsigned char)(x & 255);
    }
    loc(f[0], lo);
    int rc = add_record(&c->o, key, kn, lo, 2);
    PyMem_RawFree(key);
    return rc < 0 ? -1 : 1;
}

static int
h_srv(ctx *c, const span *f) /* S, Debian's 5.11 */
{
    wire owner, target;
    unsigned char head[12], lo[2], ip[4], srv[6];
    uint64_t port, v;
    if (!name(f[0], &owner) || !server(f[2], ".srv.", f[0], &target) || !number(f[3], &port))
        return 0;
    make_head(head, f[6], 86400, f[7]);
    int has_loc = loc(f[8], lo);
    put_be16(srv, number(f[4], &v) ? v : 0);
    put_be16(srv + 2, number(f[5], &v) ? v : 0);
    put_be16(srv + 4, port);
    if (emit(&c->o, 33, &owner, head, has_loc, lo, srv, 6, target.b, target.n, NULL, 0) < 0)
        return -1;
    if (ip4(f[1], ip) &&
        emit(&c->o, 1, &target, head, has_loc, lo, ip, 4, NULL, 0, NULL, 0) < 0)
        return -1;
    return 1;
}

static int
h_nothing(ctx *c, const span *f) /* # and - */
{
    (void)c;
    (void)f;
    return 1;
}

/* ---- the table: each line type's function and its Shape (lint.py) ---- */

#define NONE (-1)
#define U32 ((uint64_t)1 << 32)
#define U16 ((uint64_t)1 << 16)
#define MAX_NUMBERS 6

typedef struct {
    int pos;
    uint64_t limit; /* the value wraps at this; 0 ends the list */
} num_field;

typedef struct {
    int (*compile)(ctx *, const span *); /* NULL: no such line type */
    int fields;                          /* 0: says nothing (no checks either) */
    int ip, ip_required;
    num_field numbers[MAX_NUMBERS];
    int ttd, lo, prefix;
} linetype;

/* The shape of a line whose TTL, timestamp and location are its last three fields. */
#define COMMON(n, ttl) .fields = (n), .ttd = (ttl) + 1, .lo = (ttl) + 2, .prefix = NONE
#define NO_IP .ip = NONE

static const linetype TYPES[256] = {
    ['.'] = {h_zone, COMMON(6, 3), .ip = 1, .numbers = {{3, U32}}},
    ['&'] = {h_delegation, COMMON(6, 3), .ip = 1, .numbers = {{3, U32}}},
    ['Z'] = {h_soa, COMMON(11, 8), NO_IP,
             .numbers = {{3, U32}, {4, U32}, {5, U32}, {6, U32}, {7, U32}, {8, U32}}},
    ['='] = {h_host_and_ptr, COMMON(5, 2), .ip = 1, .ip_required = 1, .numbers = {{2, U32}}},
    ['+'] = {h_host, COMMON(5, 2), .ip = 1, .ip_required = 1, .numbers = {{2, U32}}},
    ['@'] = {h_mail, COMMON(7, 4), .ip = 1, .numbers = {{3, U16}, {4, U32}}},
    ['\''] = {h_txt, COMMON(5, 2), NO_IP, .numbers = {{2, U32}}},
    ['^'] = {h_reverse, COMMON(5, 2), NO_IP, .numbers = {{2, U32}}},
    ['C'] = {h_alias, COMMON(5, 2), NO_IP, .numbers = {{2, U32}}},
    [':'] = {h_generic, COMMON(6, 3), NO_IP, .numbers = {{1, U16}, {3, U32}}},
    ['%'] = {h_client_location, .fields = 2, NO_IP, .ttd = NONE, .lo = 0, .prefix = 1},
    ['S'] = {h_srv, COMMON(9, 6), .ip = 1,
             .numbers = {{3, U16}, {4, U16}, {5, U16}, {6, U32}}},
    ['#'] = {h_nothing, .fields = 0},
    ['-'] = {h_nothing, .fields = 0},
};

/* ---- the checker's rules (lint.py), as tests that a line is clean ---- */

static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* lint._STRICT_IP: four numbers 0-255 without leading zeros, nothing more. */
static int
strict_ip(span f)
{
    Py_ssize_t i = 0;
    for (int k = 0; k < 4; k++) {
        if (k) {
            if (i >= f.n || f.p[i] != '.')
                return 0;
            i++;
        }
        Py_ssize_t s = i;
        unsigned v = 0;
        while (i < f.n && is_digit(f.p[i]) && i - s < 3)
            v = v * 10 + (unsigned)(f.p[i++] - '0');
        if (i == s || v > 255 || (i - s > 1 && f.p[s] == '0'))
            return 0;
    }
    return i == f.n;
}

/* lint._number finds nothing: digits only, below the limit. */
static int
small_number(span f, uint64_t limit)
{
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < f.n; i++) {
        if (!is_digit(f.p[i]))
            return 0;
        v = v * 10 + (uint64_t)(f.p[i] - '0');
        if (v >= limit) /* limit <= 2**32: v * 10 + 9 never overflows */
            return 0;
    }
    return 1;
}

/* lint._TTD: 16 lowercase hex digits. */
static int
lower_hex16(span f)
{
    if (f.n != 16)
        return 0;
    for (int i = 0; i < 16; i++)
        if (!is_digit(f.p[i]) && !(f.p[i] >= 'a' && f.p[i] <= 'f'))
            return 0;
    return 1;
}

/* lint._LETTERS: one or two ASCII letters. */
static int
letters(span f)
{
    if (f.n < 1 || f.n > 2)
        return 0;
    for (Py_ssize_t i = 0; i < f.n; i++) {
        unsigned char c = f.p[i] | 0x20;
        if (c < 'a' || c > 'z')
            return 0;
    }
    return 1;
}

/* lint._PREFIX: empty, or up to four dotted numbers of 1-3 digits. */
static int
dotted_prefix(span f)
{
    Py_ssize_t i = 0;
    for (int k = 0; k < 4 && i < f.n; k++) {
        if (k) {
            if (f.p[i] != '.')
                return 0;
            i++;
        }
        Py_ssize_t s = i;
        while (i < f.n && is_digit(f.p[i]) && i - s < 3)
            i++;
        if (i == s)
            return 0;
    }
    return i == f.n;
}

/* Whether Linter.check would find nothing to say about this line, so that it can
 * stay in C. Any doubt hands the line to Python, which checks it for real. */
static int
clean(const linetype *t, const unsigned char *line, Py_ssize_t len, const span *f)
{
    if (line[len - 1] == '\r')
        return 0;
    /* more fields than the type uses: something after its last one */
    const span *last = &f[t->fields - 1];
    if (last->p + last->n < line + len)
        return 0;
    if (t->ip != NONE && (f[t->ip].n ? !strict_ip(f[t->ip]) : t->ip_required))
        return 0;
    for (int k = 0; k < MAX_NUMBERS && t->numbers[k].limit; k++) {
        span v = f[t->numbers[k].pos];
        if (v.n && !small_number(v, t->numbers[k].limit))
            return 0;
    }
    if (t->ttd != NONE && f[t->ttd].n && !lower_hex16(f[t->ttd]))
        return 0;
    if (t->lo != NONE && f[t->lo].n && !letters(f[t->lo]))
        return 0;
    if (t->prefix != NONE && !dotted_prefix(f[t->prefix]))
        return 0;
    return 1;
}

/* One line: 1 when done, 0 to hand it to Python, -1 on a Python error. */
static int
line_records(ctx *c, const unsigned char *line, Py_ssize_t len, int check)
{
    if (len == 0)
        return 1;
    const linetype *t = &TYPES[line[0]];
    if (t->compile == NULL)
        return 0; /* unrecognized leading byte: Python raises the error */
    if (t->fields == 0)
        return 1;
    if (memchr(line, '\\', (size_t)len))
        return 0;
    span f[NFIELDS];
    split_fields(line, len, f);
    if (check && !clean(t, line, len, f))
        return 0;
    return t->compile(c, f);
}

static PyObject *
run(PyObject *self, PyObject *args)
{
    PyObject *lines;
    Py_ssize_t start;
    int check;
    Py_buffer soa;
    ctx c;
    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTuple(args, "Onpy*O!O!O!O!:run", &lines, &start, &check, &soa,
                          &PyList_Type, &c.o.keys, &PyList_Type, &c.o.values, &PyList_Type,
                          &c.stamped, &PyList_Type, &c.soa_defaults))
        return NULL;
    PyObject *result = NULL;
    (void)self;
    if (soa.len != 20) {
        PyErr_SetString(PyExc_ValueError, "default_soa must be 20 bytes");
        goto done;
    }
    if (!PyList_Check(lines) && !PyTuple_Check(lines)) {
        PyErr_SetString(PyExc_TypeError, "lines must be a list or a tuple");
        goto done;
    }
    c.default_soa = soa.buf;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(lines);
    PyObject **items = PySequence_Fast_ITEMS(lines);
    if (start < 0)
        start = 0;
    if (reserve(&c.o, 1024) < 0)
        goto done;
    Py_ssize_t i;
    for (i = start; i < n; i++) {
        PyObject *line = items[i];
        if (!PyBytes_CheckExact(line))
            break;
        const unsigned char *text = (const unsigned char *)PyBytes_AS_STRING(line);
        Py_ssize_t len = PyBytes_GET_SIZE(line);
        while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t' || text[len - 1] == '\n'))
            len--; /* 2.2; LF too, for a line that holds one (never one of split_lines) */
        c.index = i;
        int rc = line_records(&c, text, len, check);
        if (rc < 0)
            goto done;
        if (rc == 0)
            break;
    }
    result = PyLong_FromSsize_t(i);
done:
    PyMem_RawFree(c.o.buf);
    PyBuffer_Release(&soa);
    return result;
}

/* The same over a whole data text (2.1, 2.2): lines are cut at LF and stripped of
 * trailing spaces and tabs here, so no list of lines is ever made. */
static PyObject *
run_text(PyObject *self, PyObject *args)
{
    Py_buffer data, soa;
    Py_ssize_t pos;
    int check;
    PyObject *stamped_at, *blob, *serials;
    ctx c;
    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTuple(args, "y*nnpy*O!O!O!O!OOO:run_text", &data, &pos, &c.index, &check,
                          &soa, &PyList_Type, &c.o.keys, &PyList_Type, &c.o.values,
                          &PyList_Type, &c.stamped, &PyList_Type, &c.soa_defaults,
                          &stamped_at, &blob, &serials))
        return NULL;
    PyObject *result = NULL;
    (void)self;
    if (stamped_at != Py_None && !PyList_Check(stamped_at)) {
        PyErr_SetString(PyExc_TypeError, "stamped_at must be a list or None");
        goto done;
    }
    c.stamped_at = stamped_at == Py_None ? NULL : stamped_at;
    if (blob != Py_None) {
        if (!PyByteArray_CheckExact(blob) || !PyList_Check(serials)) {
            PyErr_SetString(PyExc_TypeError, "blob must be a bytearray, serials a list");
            goto done;
        }
        c.o.blob = blob;
        c.o.serials = serials;
        c.o.base = PyByteArray_GET_SIZE(blob);
    }
    if (soa.len != 20) {
        PyErr_SetString(PyExc_ValueError, "default_soa must be 20 bytes");
        goto done;
    }
    c.default_soa = soa.buf;
    if (pos < 0)
        pos = 0;
    if (reserve(&c.o, 1024) < 0)
        goto done;
    const unsigned char *text = data.buf;
    Py_ssize_t size = data.len;
    int rc = 1;
    /* Packing touches no Python object: other threads run meanwhile (a build
     * compiles its sources two at a time). data is immutable bytes, held. */
    c.o.nogil = c.o.blob != NULL;
    PyThreadState *ts = c.o.nogil ? PyEval_SaveThread() : NULL;
    while (pos < size) {
        const unsigned char *start = text + pos;
        const unsigned char *nl = memchr(start, '\n', (size_t)(size - pos));
        Py_ssize_t end = nl ? (Py_ssize_t)(nl - text) : size;
        Py_ssize_t len = end - pos;
        while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'))
            len--;
        c.pos = pos;
        rc = line_records(&c, start, len, check);
        if (rc <= 0)
            break;
        pos = end + 1;
        c.index++;
    }
    if (ts != NULL)
        PyEval_RestoreThread(ts);
    if (rc < 0)
        goto done;
    for (Py_ssize_t i = 0; i < c.o.nmarks; i += 2)
        if (append_index(c.stamped, c.o.marks[i]) < 0 ||
            (c.stamped_at && append_index(c.stamped_at, c.o.marks[i + 1]) < 0))
            goto done;
    if (flush_packed(&c.o) < 0)
        goto done;
    result = Py_BuildValue("nnn", pos, c.index, c.o.count);
done:
    if (result == NULL && c.o.nomem && !PyErr_Occurred())
        PyErr_NoMemory();
    PyMem_RawFree(c.o.buf);
    PyMem_RawFree(c.o.pk);
    PyMem_RawFree(c.o.offs);
    PyMem_RawFree(c.o.marks);
    PyBuffer_Release(&data);
    PyBuffer_Release(&soa);
    return result;
}

/* ---- dot_line: make-data's expansion of a . line (makedata.stamped_line) ---- */

typedef struct {
    char *b;
    Py_ssize_t n, cap;
} text_buf;

static int
put(text_buf *t, const void *p, Py_ssize_t n)
{
    if (t->n + n > t->cap) {
        Py_ssize_t cap = (t->n + n) * 2;
        /* raw: expand() grows it without the GIL; the caller raises MemoryError */
        char *b = PyMem_RawRealloc(t->b, (size_t)cap);
        if (b == NULL)
            return -1;
        t->b = b;
        t->cap = cap;
    }
    memcpy(t->b + t->n, p, (size_t)n);
    t->n += n;
    return 0;
}

static int
put_span(text_buf *t, span s)
{
    return put(t, s.p, s.n);
}

static int
put_str(text_buf *t, const char *s)
{
    return put(t, s, (Py_ssize_t)strlen(s));
}

static int
put_num(text_buf *t, uint64_t v)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    return put(t, digits, n);
}

/* makedata._tidy on the line that starts at from: no empty fields at its end, and a
 * colon after trailing blanks (tinydns-data would strip them). */
static int
tidy(text_buf *t, Py_ssize_t from)
{
    while (t->n > from && t->b[t->n - 1] == ':')
        t->n--;
    if (t->n > from && (t->b[t->n - 1] == ' ' || t->b[t->n - 1] == '\t'))
        return put(t, ":", 1);
    return 0;
}

/* Where expand() cuts its text for the serial: offsets into the text, growing. */
typedef struct {
    Py_ssize_t *at;
    Py_ssize_t n, cap;
} cut_list;

/* The serial: its bytes when serial.p is set (dot_line), else a cut (expand). */
static int
put_serial(text_buf *t, span serial, cut_list *cuts)
{
    if (serial.p != NULL)
        return put_span(t, serial);
    if (cuts->n == cuts->cap) {
        Py_ssize_t cap = cuts->cap ? cuts->cap * 2 : 64;
        Py_ssize_t *at = PyMem_RawRealloc(cuts->at, (size_t)cap * sizeof *at);
        if (at == NULL)
            return -1;
        cuts->at = at;
        cuts->cap = cap;
    }
    cuts->at[cuts->n++] = t->n;
    return 0;
}

/* The last cut, or from: a cut has no width in the text, so tidy must not strip the
 * colons before it (the placeholder it stands for ends the field). */
static Py_ssize_t
floor_at(cut_list *cuts, Py_ssize_t from)
{
    return cuts != NULL && cuts->n && cuts->at[cuts->n - 1] > from ? cuts->at[cuts->n - 1] : from;
}

/* makedata.stamped_line of the . line l (trailing blanks stripped already), no GIL
 * needed; -1 when out of memory. */
static int
dot_text(text_buf *t, const unsigned char *l, Py_ssize_t len, span origin, Py_ssize_t index,
         int more, span serial, cut_list *cuts)
{
    span f[NFIELDS];
    split_fields(l, len, f); /* only the first 6 are used, as makedata splits them */
    span fqdn = f[0], ip = f[1], x = f[2], ttl = f[3], ttd_ = f[4], lo = f[5];
    /* 5.1: the server is x, or x.ns.fqdn when x has no dot; leading dots dropped */
    span server[3] = {x, {(const unsigned char *)".ns.", 4}, fqdn};
    int nserver = x.n && memchr(x.p, '.', (size_t)x.n) ? 1 : 3;
    int first = 0;
    while (first < nserver) {
        while (server[first].n && server[first].p[0] == '.') {
            server[first].p++;
            server[first].n--;
        }
        if (server[first].n)
            break;
        first++;
    }
    uint64_t ttl_value;
    if (!number(ttl, &ttl_value))
        ttl_value = 259200;
    int tail = ttd_.n || lo.n;
    Py_ssize_t from;
#define PUT(call)                                                                           \
    if ((call) < 0)                                                                         \
    return -1
#define PUT_SERVER()                                                                        \
    for (int k = first; k < nserver; k++)                                                   \
    PUT(put_span(t, server[k]))
#define PUT_TAIL()                                                                          \
    if (tail) {                                                                             \
        PUT(put(t, ":", 1));                                                                \
        PUT(put_span(t, ttd_));                                                             \
        PUT(put(t, ":", 1));                                                                \
        PUT(put_span(t, lo));                                                               \
        PUT(tidy(t, floor_at(cuts, from)));                                                 \
    }
    PUT(put_str(t, "# "));
    PUT(put_span(t, origin));
    PUT(put(t, ":", 1));
    PUT(put_num(t, (uint64_t)index + 1));
    PUT(put(t, ": ", 2));
    PUT(put(t, l, len));
    PUT(put(t, "\nZ", 2));
    from = t->n - 1;
    PUT(put_span(t, fqdn));
    PUT(put(t, ":", 1));
    PUT_SERVER();
    PUT(put_str(t, ":hostmaster."));
    PUT(put_span(t, fqdn));
    PUT(put(t, ":", 1));
    PUT(put_serial(t, serial, cuts));
    PUT(put_str(t, ttl_value ? ":16384:2048:1048576:2560:2560" : ":16384:2048:1048576:2560:0"));
    PUT_TAIL();
    PUT(put(t, "\n&", 2));
    from = t->n - 1;
    PUT(put_span(t, fqdn));
    PUT(put(t, "::", 2));
    PUT(put_span(t, x));
    PUT(put(t, ":", 1));
    PUT(put_span(t, ttl));
    if (tail) {
        PUT(put(t, ":", 1));
        PUT(put_span(t, ttd_));
        PUT(put(t, ":", 1));
        PUT(put_span(t, lo));
    }
    PUT(tidy(t, from));
    if (ip.n) {
        PUT(put(t, "\n+", 2));
        from = t->n - 1;
        PUT_SERVER();
        PUT(put(t, ":", 1));
        PUT(put_span(t, ip));
        PUT(put(t, ":", 1));
        PUT(put_num(t, ttl_value & 0xFFFFFFFFu));
        PUT_TAIL();
    }
    if (more) {
        PUT(put_str(t, "\n# "));
        PUT(put_span(t, origin));
        PUT(put(t, ":", 1));
        PUT(put_num(t, (uint64_t)index + 2));
    }
#undef PUT_TAIL
#undef PUT_SERVER
#undef PUT
    return 0;
}

/* makedata.stamped_line of a Z line without a serial (blanks stripped): its fields
 * with the serial as the fourth, no empty fields at the end. */
static int
z_text(text_buf *t, const unsigned char *l, Py_ssize_t len, cut_list *cuts)
{
    span f[NFIELDS];
    split_fields(l, len, f);
    Py_ssize_t from = t->n;
    if (put(t, "Z", 1) < 0)
        return -1;
    for (int k = 0; k < 11; k++) {
        if (k && put(t, ":", 1) < 0)
            return -1;
        if (k == 3 ? put_serial(t, (span){NULL, 0}, cuts) < 0 : put_span(t, f[k]) < 0)
            return -1;
    }
    return tidy(t, floor_at(cuts, from));
}

static PyObject *
dot_line(PyObject *self, PyObject *args)
{
    Py_buffer line, origin, serial;
    Py_ssize_t index;
    int more;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*npy*:dot_line", &line, &origin, &index, &more, &serial))
        return NULL;
    PyObject *result = NULL;
    text_buf t = {NULL, 0, 0};
    const unsigned char *l = line.buf;
    Py_ssize_t len = line.len;
    while (len > 0 && (l[len - 1] == ' ' || l[len - 1] == '\t'))
        len--;
    if (len == 0 || l[0] != '.') {
        PyErr_SetString(PyExc_ValueError, "not a . line");
        goto done;
    }
    span o = {origin.buf, origin.len}, s = {serial.buf, serial.len};
    if (dot_text(&t, l, len, o, index, more, s, NULL) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyBytes_FromStringAndSize(t.b, t.n);
done:
    PyMem_RawFree(t.b);
    PyBuffer_Release(&line);
    PyBuffer_Release(&origin);
    PyBuffer_Release(&serial);
    return result;
}

/* ---- expand: makedata._expand of a source without IPv6 lines, in one pass ----
 *
 * stamped[k] is the index of a line to rewrite (a . line, or a Z line without a
 * serial), starts[k] where it starts in content, both in line order, as run_text
 * gave them. The text is built without the GIL and cut where the serial goes; the
 * pieces are made into bytes at the end. long_lines gets k of every stamped line
 * long enough that its SOA contact might pass 255 bytes (makedata checks those). */

static Py_ssize_t *
index_array(PyObject *list, Py_ssize_t n)
{
    Py_ssize_t *a = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *a);
    if (a == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        a[k] = PyLong_AsSsize_t(PyList_GET_ITEM(list, k));
        if (a[k] == -1 && PyErr_Occurred()) {
            PyMem_Free(a);
            return NULL;
        }
    }
    return a;
}

static PyObject *
expand(PyObject *self, PyObject *args)
{
    Py_buffer content, origin;
    PyObject *stamped, *starts, *long_lines;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*O!O!O!:expand", &content, &origin, &PyList_Type, &stamped,
                          &PyList_Type, &starts, &PyList_Type, &long_lines))
        return NULL;
    PyObject *result = NULL;
    text_buf t = {NULL, 0, 0};
    cut_list cuts = {NULL, 0, 0};
    Py_ssize_t *idx = NULL, *at = NULL, *longs = NULL, nlong = 0;
    Py_ssize_t n = PyList_GET_SIZE(stamped), size = content.len;
    if (PyList_GET_SIZE(starts) != n) {
        PyErr_SetString(PyExc_ValueError, "stamped and starts differ in length");
        goto done;
    }
    if ((idx = index_array(stamped, n)) == NULL || (at = index_array(starts, n)) == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (at[k] < (k ? at[k - 1] + 1 : 0) || at[k] >= size || idx[k] < 0) {
            PyErr_SetString(PyExc_ValueError, "starts out of order or past the content");
            goto done;
        }
    }
    if ((longs = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *longs)) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const unsigned char *c = content.buf;
    span o = {origin.buf, origin.len}, cut = {NULL, 0};
    int failed = 0; /* 1: out of memory, 2: not a . or Z line */
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t pos = 0;
    if (put(&t, "# ", 2) < 0 || put_span(&t, o) < 0 || put(&t, ":1\n", 3) < 0)
        failed = 1;
    for (Py_ssize_t k = 0; k < n && !failed; k++) {
        Py_ssize_t start = at[k];
        const unsigned char *lf = memchr(c + start, '\n', (size_t)(size - start));
        Py_ssize_t end = lf ? lf - c : size, len = end - start;
        if (end - start + 1 + 11 > 255)
            longs[nlong++] = k;
        while (len > 0 && (c[start + len - 1] == ' ' || c[start + len - 1] == '\t'))
            len--;
        if (put(&t, c + pos, start - pos) < 0) {
            failed = 1;
            break;
        }
        if (len && c[start] == '.')
            failed = dot_text(&t, c + start, len, o, idx[k], end + 1 < size, cut, &cuts) < 0;
        else if (len && c[start] == 'Z')
            failed = z_text(&t, c + start, len, &cuts) < 0;
        else
            failed = 2;
        pos = end;
    }
    if (!failed && (put(&t, c + pos, size - pos) < 0 ||
                    (size && c[size - 1] != '\n' && put(&t, "\n", 1) < 0)))
        failed = 1;
    Py_END_ALLOW_THREADS
    if (failed) {
        if (failed == 1)
            PyErr_NoMemory();
        else
            PyErr_SetString(PyExc_ValueError, "a stamped line is neither a . nor a Z line");
        goto done;
    }
    for (Py_ssize_t k = 0; k < nlong; k++) {
        PyObject *v = PyLong_FromSsize_t(longs[k]);
        if (v == NULL || PyList_Append(long_lines, v) < 0) {
            Py_XDECREF(v);
            goto done;
        }
        Py_DECREF(v);
    }
    PyObject *pieces = PyTuple_New(cuts.n + 1);
    if (pieces == NULL)
        goto done;
    for (Py_ssize_t k = 0; k <= cuts.n; k++) {
        Py_ssize_t from = k ? cuts.at[k - 1] : 0, to = k < cuts.n ? cuts.at[k] : t.n;
        PyObject *piece = PyBytes_FromStringAndSize(t.b + from, to - from);
        if (piece == NULL) {
            Py_DECREF(pieces);
            goto done;
        }
        PyTuple_SET_ITEM(pieces, k, piece);
    }
    result = pieces;
done:
    PyMem_RawFree(t.b);
    PyMem_RawFree(cuts.at);
    PyMem_Free(idx);
    PyMem_Free(at);
    PyMem_Free(longs);
    PyBuffer_Release(&content);
    PyBuffer_Release(&origin);
    return result;
}

/* ---- scan: what makedata asks of a whole source before compiling it ----
 *
 * scan(content, mark) -> (mark_at, ipv6, lines): where mark first occurs (-1: not
 * at all), whether a line starts with 3 or 6, and how many lines (a last one without
 * LF counts), in one pass without the GIL. */
static PyObject *
scan(PyObject *self, PyObject *args)
{
    Py_buffer content, mark;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*:scan", &content, &mark))
        return NULL;
    const unsigned char *c = content.buf, *end = c + content.len;
    Py_ssize_t mark_at = -1, lines = 0;
    int v6 = 0;
    Py_BEGIN_ALLOW_THREADS
    const unsigned char *m = mark.len ? memmem(c, (size_t)content.len, mark.buf, (size_t)mark.len)
                                      : c;
    if (m != NULL)
        mark_at = m - c;
    if (content.len)
        v6 = c[0] == '3' || c[0] == '6';
    const unsigned char *p = c;
    for (;;) {
        const unsigned char *lf = memchr(p, '\n', (size_t)(end - p));
        if (lf == NULL)
            break;
        lines++;
        p = lf + 1;
        if (p < end && (*p == '3' || *p == '6'))
            v6 = 1;
    }
    if (p < end)
        lines++;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&content);
    PyBuffer_Release(&mark);
    return Py_BuildValue("nON", mark_at, v6 ? Py_True : Py_False, PyLong_FromSsize_t(lines));
}

/* ---- write_cdb: cdb_make (cdbmake.h) fed from the caller's lists ----
 *
 * The records are Python objects, so they are read with the GIL held; every
 * write() runs without it, and so does the making and writing of the hash tables,
 * which use only memory of our own. Two passes over the records: the first checks
 * them, sums the size (so an oversized database fails before anything is written)
 * and hashes the keys; the second writes them after the header, which the first
 * one made known. */

/* The second pass, with the GIL: record i as the first pass saw it, or -1 with
 * RuntimeError when another thread changed the lists while a write ran. */
static int
put_records(cdbmake *w, PyObject *ks, PyObject *vs, Py_ssize_t n, const cdbmake_entry *entries,
            uint32_t end)
{
    unsigned char rec[8];
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PySequence_Fast_GET_SIZE(ks) != n || PySequence_Fast_GET_SIZE(vs) != n)
            goto changed;
        PyObject *k = PySequence_Fast_GET_ITEM(ks, i), *v = PySequence_Fast_GET_ITEM(vs, i);
        if (!PyBytes_Check(k) || !PyBytes_Check(v))
            goto changed;
        Py_ssize_t klen = PyBytes_GET_SIZE(k), vlen = PyBytes_GET_SIZE(v);
        const unsigned char *key = (const unsigned char *)PyBytes_AS_STRING(k);
        uint32_t next = i + 1 < n ? entries[i + 1].p : end;
        if ((uint64_t)next - entries[i].p != (uint64_t)(8 + klen + vlen) ||
            cdb_hash(key, (size_t)klen) != entries[i].h)
            goto changed;
        cdb_put_le32(rec, (uint32_t)klen);
        cdb_put_le32(rec + 4, (uint32_t)vlen);
        /* a write may let another thread drop them meanwhile */
        Py_INCREF(k);
        Py_INCREF(v);
        int rc = cdbmake_put(w, rec, 8) < 0 || cdbmake_put(w, key, (size_t)klen) < 0 ||
                 cdbmake_put(w, PyBytes_AS_STRING(v), (size_t)vlen) < 0;
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc)
            return -1;
    }
    return 0;
changed:
    PyErr_SetString(PyExc_RuntimeError, "keys or values changed during write_cdb");
    w->err = CDBMAKE_RAISED;
    return -1;
}

static PyObject *
write_cdb(PyObject *self, PyObject *args)
{
    int fd;
    PyObject *keys, *values, *ks = NULL, *vs = NULL, *result = NULL;
    cdbmake_entry *entries = NULL;
    cdbmake w = {0};
    uint32_t count[256];
    unsigned char header[CDB_HEADER];
    (void)self;
    if (!PyArg_ParseTuple(args, "iOO:write_cdb", &fd, &keys, &values))
        return NULL;
    ks = PySequence_Fast(keys, "keys must be a sequence");
    if (ks == NULL)
        goto done;
    vs = PySequence_Fast(values, "values must be a sequence");
    if (vs == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ks);
    if (PySequence_Fast_GET_SIZE(vs) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        goto done;
    }
    entries = PyMem_RawMalloc(((size_t)n + 1) * sizeof *entries);
    if (entries == NULL || cdbmake_open(&w, fd) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    /* First pass: types, positions, hashes, and the size of the whole file. */
    PyObject **kv = PySequence_Fast_ITEMS(ks), **vv = PySequence_Fast_ITEMS(vs);
    uint64_t pos = CDB_HEADER;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = kv[i], *v = vv[i];
        if (!PyBytes_Check(k) || !PyBytes_Check(v)) {
            PyErr_Format(PyExc_TypeError, "record %zd: keys and values must be bytes, not %s",
                         i, Py_TYPE(PyBytes_Check(k) ? v : k)->tp_name);
            goto done;
        }
        Py_ssize_t klen = PyBytes_GET_SIZE(k);
        entries[i].h = cdb_hash((const unsigned char *)PyBytes_AS_STRING(k), (size_t)klen);
        entries[i].p = (uint32_t)pos;
        pos += 8 + (uint64_t)klen + (uint64_t)PyBytes_GET_SIZE(v);
        if (!cdbmake_fits(pos, (uint64_t)i + 1)) {
            w.err = CDBMAKE_TOO_LARGE;
            goto failed;
        }
    }
    uint32_t end = (uint32_t)pos;
    cdbmake_header(header, count, entries, (uint64_t)n, end);
    if (cdbmake_put(&w, header, CDB_HEADER) < 0 || put_records(&w, ks, vs, n, entries, end) < 0)
        goto failed;
    cdbmake_release(&w);
    int rc = cdbmake_finish(&w, entries, (uint64_t)n, count);
    cdbmake_acquire(&w);
    if (rc < 0)
        goto failed;
    result = Py_NewRef(Py_None);
    goto done;
failed:
    cdbmake_raise(&w);
done:
    PyMem_RawFree(entries);
    cdbmake_close(&w);
    Py_XDECREF(ks);
    Py_XDECREF(vs);
    return result;
}

/* ---- Stream: tinydns-data's own way, records written as the lines compile ----
 *
 * Stream(fd) starts a cdb at fd's offset 0 (the header's 2048 bytes are written
 * as zeros, then filled in by finish()). run_text() compiles lines of a chunk of
 * the data straight into it, without the GIL; add() puts records compiled by
 * Python there, in order; finish() writes the hash tables and the header. Memory
 * is cdb_make's buffer and 8 bytes per record, whatever the size of the data. */

typedef struct {
    PyObject_HEAD
    stream s;
    int broken; /* a write failed: the file is no cdb, nothing more goes in */
    int finished;
} StreamObject;

static int
stream_ready(StreamObject *self)
{
    if (self->s.w.buf == NULL || self->broken || self->finished) {
        PyErr_SetString(PyExc_ValueError, "the stream is closed, failed or finished");
        return -1;
    }
    return 0;
}

/* After a failed put with the GIL held: the exception, and the stream is done. */
static PyObject *
stream_failed(StreamObject *self)
{
    self->broken = 1;
    cdbmake_raise(&self->s.w);
    if (!PyErr_Occurred())
        PyErr_NoMemory();
    return NULL;
}

static int
Stream_init(StreamObject *self, PyObject *args, PyObject *kwds)
{
    int fd;
    static char *kwlist[] = {"fd", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i:Stream", kwlist, &fd))
        return -1;
    if (self->s.w.buf != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Stream already started");
        return -1;
    }
    if (cdbmake_open(&self->s.w, fd) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    /* The disk writes the cdb while the compile goes on (cdbmake.h's kick), so the
     * fsync at the end waits for the last stretch only. */
    self->s.w.kick = 1;
    self->s.pos = CDB_HEADER;
    static const unsigned char zeros[CDB_HEADER];
    if (cdbmake_put(&self->s.w, zeros, CDB_HEADER) < 0) {
        stream_failed(self);
        return -1;
    }
    return 0;
}

static void
Stream_dealloc(StreamObject *self)
{
    PyMem_RawFree(self->s.ent);
    cdbmake_close(&self->s.w);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* run_text(data, pos, index, final, default_soa) -> (pos, index) */
static PyObject *
Stream_run_text(StreamObject *self, PyObject *args)
{
    Py_buffer data, soa;
    Py_ssize_t pos;
    int final;
    ctx c;
    memset(&c, 0, sizeof c);
    if (!PyArg_ParseTuple(args, "y*nnpy*:run_text", &data, &pos, &c.index, &final, &soa))
        return NULL;
    PyObject *result = NULL;
    if (stream_ready(self) < 0)
        goto done;
    if (soa.len != 20) {
        PyErr_SetString(PyExc_ValueError, "default_soa must be 20 bytes");
        goto done;
    }
    c.default_soa = soa.buf;
    c.o.stream = &self->s;
    if (pos < 0)
        pos = 0;
    if (reserve(&c.o, 1024) < 0)
        goto done;
    const unsigned char *text = data.buf;
    Py_ssize_t size = data.len;
    int rc = 1;
    c.o.nogil = 1;
    cdbmake_release(&self->s.w);
    while (pos < size) {
        const unsigned char *start = text + pos;
        const unsigned char *nl = memchr(start, '\n', (size_t)(size - pos));
        if (nl == NULL && !final)
            break; /* the rest of this line is in the next chunk */
        Py_ssize_t end = nl ? (Py_ssize_t)(nl - text) : size;
        Py_ssize_t len = end - pos;
        while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'))
            len--;
        rc = line_records(&c, start, len, 0);
        if (rc <= 0)
            break;
        pos = end + 1;
        c.index++;
    }
    cdbmake_acquire(&self->s.w);
    if (rc < 0) {
        if (c.o.nomem) {
            self->broken = 1;
            PyErr_NoMemory();
        }
        else
            stream_failed(self);
        goto done;
    }
    result = Py_BuildValue("nn", pos, c.index);
done:
    PyMem_RawFree(c.o.buf);
    PyBuffer_Release(&data);
    PyBuffer_Release(&soa);
    return result;
}

/* add(keys, values): records compiled by Python, after those already in. */
static PyObject *
Stream_add(StreamObject *self, PyObject *args)
{
    PyObject *keys, *values;
    if (!PyArg_ParseTuple(args, "O!O!:add", &PyList_Type, &keys, &PyList_Type, &values))
        return NULL;
    if (stream_ready(self) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *k = PyList_GET_ITEM(keys, i), *v = PyList_GET_ITEM(values, i);
        if (!PyBytes_Check(k) || !PyBytes_Check(v)) {
            PyErr_SetString(PyExc_TypeError, "keys and values must be bytes");
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        /* the lists may change while a write runs without the GIL: hold each pair */
        if (i >= PyList_GET_SIZE(keys) || i >= PyList_GET_SIZE(values)) {
            PyErr_SetString(PyExc_RuntimeError, "keys or values changed during add");
            self->broken = 1;
            return NULL;
        }
        PyObject *k = Py_NewRef(PyList_GET_ITEM(keys, i));
        PyObject *v = Py_NewRef(PyList_GET_ITEM(values, i));
        int rc = PyBytes_Check(k) && PyBytes_Check(v)
                     ? stream_put(&self->s, (const unsigned char *)PyBytes_AS_STRING(k),
                                  PyBytes_GET_SIZE(k), (const unsigned char *)PyBytes_AS_STRING(v),
                                  PyBytes_GET_SIZE(v))
                     : -2;
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc == -2) {
            PyErr_SetString(PyExc_RuntimeError, "keys or values changed during add");
            self->broken = 1;
            return NULL;
        }
        if (rc < 0)
            return stream_failed(self);
    }
    Py_RETURN_NONE;
}

/* put(blob, serials, stamp, count): records already in cdb's record layout (a
 * PackedRecords blob, count of them), after those already in, with the four bytes
 * of stamp written over the blob's at each offset of serials (ascending; the
 * default SOA serials). The blob is walked and written without the GIL, and is not
 * changed. */
static PyObject *
Stream_put(StreamObject *self, PyObject *args)
{
    Py_buffer blob, stamp;
    PyObject *serials;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*Oy*n:put", &blob, &serials, &stamp, &count))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t *at = NULL, nat = 0;
    PyObject *seq = NULL;
    if (stream_ready(self) < 0)
        goto done;
    if (stamp.len != 4) {
        PyErr_SetString(PyExc_ValueError, "stamp must be 4 bytes");
        goto done;
    }
    seq = PySequence_Fast(serials, "serials must be a sequence");
    if (seq == NULL)
        goto done;
    nat = PySequence_Fast_GET_SIZE(seq);
    at = PyMem_RawMalloc(((size_t)nat + 1) * sizeof *at);
    if (at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nat; i++) {
        at[i] = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i));
        if (at[i] == -1 && PyErr_Occurred())
            goto done;
        if (at[i] < (i ? at[i - 1] + 4 : 0) || at[i] > blob.len - 4) {
            PyErr_SetString(PyExc_ValueError, "serials out of place");
            goto done;
        }
    }
    const unsigned char *b = blob.buf;
    Py_ssize_t len = blob.len;
    /* the records first: whole, and as many as said, before anything is written */
    Py_ssize_t i = 0, seen = 0;
    while (i < len) {
        if (len - i < 8)
            break;
        uint64_t kn = cdb_get_le32(b + i), vn = cdb_get_le32(b + i + 4);
        if ((uint64_t)(len - i - 8) < kn + vn)
            break;
        i += 8 + (Py_ssize_t)(kn + vn);
        seen++;
    }
    if (i != len || seen != count) {
        PyErr_SetString(PyExc_ValueError, "the blob is not whole records");
        goto done;
    }
    stream *s = &self->s;
    if (!cdbmake_fits(s->pos + (uint64_t)len, (uint64_t)s->n + (uint64_t)count)) {
        s->w.err = CDBMAKE_TOO_LARGE;
        stream_failed(self);
        goto done;
    }
    int rc = 0;
    cdbmake_release(&s->w);
    for (i = 0; i < len && rc == 0;) {
        uint64_t kn = cdb_get_le32(b + i), vn = cdb_get_le32(b + i + 4);
        rc = stream_entry(s, cdb_hash(b + i + 8, (size_t)kn));
        s->pos += 8 + kn + vn;
        i += 8 + (Py_ssize_t)(kn + vn);
    }
    Py_ssize_t from = 0;
    for (Py_ssize_t k = 0; k < nat && rc == 0; k++) {
        rc = cdbmake_put(&s->w, b + from, (size_t)(at[k] - from));
        if (rc == 0)
            rc = cdbmake_put(&s->w, stamp.buf, 4);
        from = at[k] + 4;
    }
    if (rc == 0)
        rc = cdbmake_put(&s->w, b + from, (size_t)(len - from));
    cdbmake_acquire(&s->w);
    if (rc < 0) {
        stream_failed(self);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyMem_RawFree(at);
    Py_XDECREF(seq);
    PyBuffer_Release(&blob);
    PyBuffer_Release(&stamp);
    return result;
}

/* finish() -> records: the hash tables after the records, then the header. */
/* The entries, as (hash, position) little-endian u32 pairs in record order, to the
 * file pairs (dnsmaster.core.cdb.Piece's index layout): through a second cdbmake on
 * it, so the writes are as buffered and as interruptible. 0, or -1 with err set. */
static int
stream_pairs(stream *s, int pairs, int *err)
{
    cdbmake p;
    if (cdbmake_open(&p, pairs) < 0) {
        *err = p.err;
        return -1;
    }
    p.ts = s->w.ts;
    int rc = 0;
    for (size_t k = 0; k < s->n && rc == 0; k++) {
        if (p.used + 8 > CDB_BUF)
            rc = cdbmake_flush(&p);
        if (rc == 0) {
            cdb_put_le32(p.buf + p.used, s->ent[k].h);
            cdb_put_le32(p.buf + p.used + 4, s->ent[k].p);
            p.used += 8;
        }
    }
    if (rc == 0)
        rc = cdbmake_flush(&p);
    *err = p.err;
    cdbmake_close(&p);
    return rc;
}

static PyObject *
Stream_finish(StreamObject *self, PyObject *args)
{
    int pairs = -1;
    if (!PyArg_ParseTuple(args, "|i:finish", &pairs))
        return NULL;
    if (stream_ready(self) < 0)
        return NULL;
    stream *s = &self->s;
    uint32_t count[256];
    unsigned char header[CDB_HEADER];
    int err = 0;
    cdbmake_release(&s->w);
    int rc = pairs >= 0 ? stream_pairs(s, pairs, &err) : 0;
    if (rc < 0)
        s->w.err = err;
    else {
        cdbmake_header(header, count, s->ent, (uint64_t)s->n, (uint32_t)s->pos);
        rc = cdbmake_finish(&s->w, s->ent, (uint64_t)s->n, count);
    }
    cdbmake_acquire(&s->w);
    if (rc < 0 || cdbmake_out(&s->w, header, CDB_HEADER, 0) < 0)
        return stream_failed(self);
    self->finished = 1;
    PyMem_RawFree(s->ent);
    s->ent = NULL;
    s->cap = 0;
    return PyLong_FromSize_t(s->n);
}

static PyObject *
Stream_records(StreamObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSize_t(self->s.n);
}

static PyMethodDef Stream_methods[] = {
    {"run_text", (PyCFunction)Stream_run_text, METH_VARARGS,
     "run_text(data, pos, index, final, default_soa) -> (pos, index)\n\n"
     "Compile the lines of data from offset pos (line index) into the cdb, without\n"
     "the GIL; stop at the first line left to Python, or, unless final, at a line\n"
     "without its LF (the next chunk holds the rest). pos >= len(data): all done."},
    {"add", (PyCFunction)Stream_add, METH_VARARGS,
     "add(keys, values) -> None\n\nPut these records into the cdb, in order."},
    {"put", (PyCFunction)Stream_put, METH_VARARGS,
     "put(blob, serials, stamp, count) -> None\n\n"
     "Put count records packed in cdb's record layout into the cdb, in order, with\n"
     "stamp written over the 4 bytes at each offset of serials; without the GIL."},
    {"finish", (PyCFunction)Stream_finish, METH_VARARGS,
     "finish(pairs=-1) -> int\n\nWrite the hash tables and the header; return the record\n"
     "count. pairs, an open fd, first gets each record's (hash, position) as\n"
     "little-endian u32 pairs in record order."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Stream_getset[] = {
    {"records", (getter)Stream_records, NULL, "records put in so far", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject StreamType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "dnsmaster.core._ccompile.Stream",
    .tp_basicsize = sizeof(StreamObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Stream(fd): a cdb written to fd as the records come (see run_text).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Stream_init,
    .tp_dealloc = (destructor)Stream_dealloc,
    .tp_methods = Stream_methods,
    .tp_getset = Stream_getset,
};

/* writeback(fd): start writing fd's dirty pages back, without waiting. */
static PyObject *
writeback(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int fd = PyObject_AsFileDescriptor(arg);
    if (fd < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    start_writeback(fd);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

/* How many bytes c there are in p[0:n]: 16 bytes a step where SSE2 is (every
 * x86-64), 8 elsewhere; bytes.count looks at one byte a step. */
static uint64_t
count_byte(const unsigned char *p, size_t n, unsigned char c)
{
    uint64_t total = 0;
    size_t i = 0;
#ifdef __SSE2__
    const __m128i want = _mm_set1_epi8((char)c), zero = _mm_setzero_si128();
    while (n - i >= 16) {
        /* each lane counts down by one per match (a match is all ones, -1); 255
         * steps at most before the lanes are summed, so none wraps */
        size_t steps = (n - i) / 16 > 255 ? 255 : (n - i) / 16;
        __m128i acc = zero;
        for (size_t k = 0; k < steps; k++, i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            acc = _mm_sub_epi8(acc, _mm_cmpeq_epi8(v, want));
        }
        __m128i sums = _mm_sad_epu8(acc, zero); /* two 64-bit lane sums */
        total += (uint64_t)_mm_cvtsi128_si64(sums) +
                 (uint64_t)_mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums));
    }
#else
    const uint64_t ones = 0x0101010101010101ULL, low7 = 0x7f7f7f7f7f7f7f7fULL;
    const uint64_t pattern = ones * c;
    while (n - i >= 8) {
        size_t steps = (n - i) / 8 > 255 ? 255 : (n - i) / 8;
        uint64_t acc = 0;
        for (size_t k = 0; k < steps; k++, i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            uint64_t x = w ^ pattern;              /* a zero byte where c is */
            uint64_t t = ((x & low7) + low7) | x;  /* high bit set where x's byte is not 0 */
            acc += (~t >> 7) & ones;               /* 1 in each lane that matched */
        }
        acc = (acc & 0x00ff00ff00ff00ffULL) + ((acc >> 8) & 0x00ff00ff00ff00ffULL);
        total += (acc * 0x0001000100010001ULL) >> 48;
    }
#endif
    for (; i < n; i++)
        total += p[i] == c;
    return total;
}

/* newlines(buffer) -> int: how many LFs it holds, without the GIL. */
static PyObject *
newlines(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uint64_t count;
    Py_BEGIN_ALLOW_THREADS
    count = count_byte(view.buf, (size_t)view.len, '\n');
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(count);
}

static PyMethodDef methods[] = {
    {"newlines", newlines, METH_O,
     "newlines(buffer) -> int\n\n"
     "How many LF bytes the buffer holds (bytes.count(b'\\n'), 16 bytes a step),\n"
     "without the GIL."},
    {"writeback", writeback, METH_O,
     "writeback(fd) -> None\n\n"
     "Ask the kernel to start writing the file's dirty pages back, without waiting\n"
     "(sync_file_range); advisory: nothing is raised when it cannot."},
    {"write_cdb", write_cdb, METH_VARARGS,
     "write_cdb(fd, keys, values) -> None\n\n"
     "Write the cdb of dnsmaster.core.cdb.dumps(keys, values) to the file fd\n"
     "(from its current offset); every write() runs without the GIL."},
    {"run_text", run_text, METH_VARARGS,
     "run_text(data, pos, index, check, default_soa, keys, values, stamped, soa_defaults,\n"
     "stamped_at, blob, serials) -> (pos, index, records)\n\n"
     "Compile the lines of data from offset pos (line index) on; return where the\n"
     "first line left to Python starts and its index (pos >= len(data): all done)."},
    {"expand", expand, METH_VARARGS,
     "expand(content, origin, stamped, starts, long_lines) -> pieces\n\n"
     "makedata._expand of a source without IPv6 lines, cut where the serial goes,\n"
     "without the GIL; long_lines gets the k of each stamped line to check for length."},
    {"scan", scan, METH_VARARGS,
     "scan(content, mark) -> (mark_at, ipv6, lines)\n\n"
     "Where mark first is (-1: nowhere), whether a line starts with 3 or 6, how many\n"
     "lines, without the GIL."},
    {"dot_line", dot_line, METH_VARARGS,
     "dot_line(line, origin, index, more, serial) -> bytes\n\n"
     "makedata.stamped_line of a . line: its comment, Z, & and + lines."},
    {"run", run, METH_VARARGS,
     "run(lines, start, check, default_soa, keys, values, stamped, soa_defaults) -> int\n\n"
     "Compile (and with check, check) lines from start on; return the index of the\n"
     "first line left to Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dnsmaster.core._ccompile",
    "C fast path of dnsmaster.core.compiler (optional).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__ccompile(void)
{
    if (PyType_Ready(&StreamType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Stream", (PyObject *)&StreamType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
