/*
 * cdb_make (spec 8), once, for both C extensions of dnsmaster.core: _ccompile's
 * write_cdb (records from Python lists) and _cdbblob's write (records from packed
 * blobs). Each includes this header and feeds it differently; what a cdb file is
 * lives here only: the hash, the little-endian words, the header, the buffered
 * writes, and the hash tables. dnsmaster.core.cdb.dumps is the reference that both
 * are held to, byte for byte.
 *
 * A writer fills a cdbmake_entry (hash, position) per record as it goes, puts the
 * header and the records through cdbmake_put (or, for records already in a file,
 * cdbmake_copy), then hands the entries to
 * cdbmake_finish, which lays out and writes the tables. Everything here but
 * cdbmake_raise runs with or without the GIL: a writer that releases it itself
 * records the thread state in ts (cdbmake_release/cdbmake_acquire), so that a
 * write() cut short by a signal can run the handlers (PEP 475); with ts NULL the
 * GIL is held, and each write() lets it go for its duration.
 *
 * Every function is static: each extension gets its own copy, and setup.py lists
 * this file in both extensions' depends so that an edit here rebuilds both.
 */

#ifndef DNSMASTER_CDBMAKE_H
#define DNSMASTER_CDBMAKE_H

#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#define CDB_HEADER 2048
#define CDB_BUF (1 << 20)
/* 8.4: positions are 32-bit; a database must end before 4 GiB. */
#define CDB_LIMIT ((uint64_t)1 << 32)

/* cdbmake.err besides an errno (> 0). */
#define CDBMAKE_RAISED (-1)    /* a Python exception is set: a signal handler raised */
#define CDBMAKE_NO_MEMORY (-2)
#define CDBMAKE_TOO_LARGE (-3) /* the database would reach 4 GiB */
#define CDBMAKE_SHORT (-4)     /* a source file ends before the range to copy does */

/* One record as its table sees it: the key's hash and where the record starts. */
typedef struct {
    uint32_t h;
    uint32_t p;
} cdbmake_entry;
_Static_assert(sizeof(cdbmake_entry) == 8, "an entry is a table slot's 8 bytes");

typedef struct {
    int fd;
    unsigned char *buf; /* CDB_BUF bytes waiting for write() */
    size_t used;
    PyThreadState *ts;  /* set while the writer runs without the GIL */
    int err;            /* an errno, or one of CDBMAKE_* */
    int kick;           /* start the disk's writeback as it goes (cdbmake_kick) */
    uint64_t written;   /* bytes written to fd by this writer, from offset 0 */
    uint64_t kicked;    /* where the writeback started last */
} cdbmake;

/* Whether cdbmake_entry's memory is the file's (hash, position) layout: two
 * little-endian u32, so that tables and pairs go out as they are. */
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define CDB_LE_ENTRIES 1
#else
#define CDB_LE_ENTRIES 0
#endif

/* A file that is fsynced once whole (the receiver's) has its writeback started every
 * CDB_KICK bytes: the disk writes while the rest is made, and the fsync at the end
 * waits for the tail only. */
#define CDB_KICK ((uint64_t)8 << 20)

static inline uint32_t
cdb_get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void
cdb_put_le32(unsigned char *d, uint32_t v)
{
    d[0] = (unsigned char)v;
    d[1] = (unsigned char)(v >> 8);
    d[2] = (unsigned char)(v >> 16);
    d[3] = (unsigned char)(v >> 24);
}

/* 8.2: h = ((h * 33) mod 2**32) xor byte, from 5381. */
static inline uint32_t
cdb_hash(const unsigned char *key, size_t len)
{
    uint32_t h = 5381;
    for (size_t j = 0; j < len; j++)
        h = (h * 33) ^ key[j];
    return h;
}

/* x % d for a d fixed over many x (d > 0), without a division each time: Lemire's
 * remainder by multiplication, exact for every 32-bit x and d. m is cdb_fastmod_m(d).
 * A table's slot of every record is (h >> 8) % slots; a division there cost a
 * tenth of writing a million-record cdb. */
static inline uint64_t
cdb_fastmod_m(uint32_t d)
{
    return UINT64_C(0xFFFFFFFFFFFFFFFF) / d + 1;
}

static inline uint32_t
cdb_fastmod(uint32_t x, uint64_t m, uint32_t d)
{
    return (uint32_t)(((unsigned __int128)(m * x) * d) >> 64);
}

/* Whether a database whose records end at end, with n of them, stays under 4 GiB.
 * cdb.dumps refuses as soon as a position reaches 4 GiB; positions only grow, so
 * that is when the records and their 16 bytes of table slots each would. */
static inline int
cdbmake_fits(uint64_t end, uint64_t n)
{
    return end + 16 * n < CDB_LIMIT;
}

/* 0, or -1 (err: CDBMAKE_NO_MEMORY) when the buffer cannot be had. */
static int
cdbmake_open(cdbmake *w, int fd)
{
    w->fd = fd;
    w->used = 0;
    w->ts = NULL;
    w->err = 0;
    w->kick = 0;
    w->written = 0;
    w->kicked = 0;
    w->buf = PyMem_RawMalloc(CDB_BUF);
    if (w->buf == NULL) {
        w->err = CDBMAKE_NO_MEMORY;
        return -1;
    }
    return 0;
}

static void
cdbmake_close(cdbmake *w)
{
    PyMem_RawFree(w->buf);
    w->buf = NULL;
}

/* Let the GIL go for a stretch that touches no Python object; cdbmake_acquire ends it. */
static void
cdbmake_release(cdbmake *w)
{
    w->ts = PyEval_SaveThread();
}

static void
cdbmake_acquire(cdbmake *w)
{
    PyEval_RestoreThread(w->ts);
    w->ts = NULL;
}

/* Run the signal handlers (with the GIL, whoever holds it now): 0, or -1 with
 * w->err CDBMAKE_RAISED when one raised. */
static int
cdbmake_signals(cdbmake *w)
{
    if (w->ts)
        PyEval_RestoreThread(w->ts);
    int rc = PyErr_CheckSignals();
    if (w->ts)
        w->ts = PyEval_SaveThread();
    if (rc < 0) {
        w->err = CDBMAKE_RAISED;
        return -1;
    }
    return 0;
}

/* n more bytes are in the file; the writeback of what is there started once
 * CDB_KICK of them wait. Only a hint, so its failure is no error: the fsync after
 * reports the disk's. */
static void
cdbmake_wrote(cdbmake *w, uint64_t n)
{
    w->written += n;
#ifdef SYNC_FILE_RANGE_WRITE
    if (w->kick && w->written - w->kicked >= CDB_KICK) {
        PyThreadState *ts = w->ts ? NULL : PyEval_SaveThread();
        (void)sync_file_range(w->fd, (off64_t)w->kicked, (off64_t)(w->written - w->kicked),
                              SYNC_FILE_RANGE_WRITE);
        if (ts)
            PyEval_RestoreThread(ts);
        w->kicked = w->written;
    }
#endif
}

/* n bytes to the fd, at its offset (at < 0: write) or at ``at`` (pwrite), each call
 * without the GIL. A short write goes on with the rest and EINTR retries, both after
 * running the signal handlers (a signal cuts a blocked write short, or interrupts it
 * when nothing was written: PEP 475). 0, or -1 with w->err set. */
static int
cdbmake_out(cdbmake *w, const unsigned char *p, size_t n, off_t at)
{
    while (n > 0) {
        PyThreadState *ts = w->ts ? NULL : PyEval_SaveThread();
        ssize_t k = at < 0 ? write(w->fd, p, n) : pwrite(w->fd, p, n, at);
        int e = errno;
        if (ts)
            PyEval_RestoreThread(ts);
        if (k < 0) {
            if (e != EINTR) {
                w->err = e;
                return -1;
            }
            k = 0;
        }
        if ((size_t)k < n && cdbmake_signals(w) < 0)
            return -1;
        p += k;
        n -= (size_t)k;
        if (at >= 0)
            at += k;
    }
    return 0;
}

/* The buffer to the fd. 0, or -1 with w->err set. */
static int
cdbmake_flush(cdbmake *w)
{
    if (cdbmake_out(w, w->buf, w->used, -1) < 0)
        return -1;
    cdbmake_wrote(w, w->used);
    w->used = 0;
    return 0;
}

static int
cdbmake_put(cdbmake *w, const void *src, size_t n)
{
    const unsigned char *p = src;
    while (n > 0) {
        if (w->used == CDB_BUF && cdbmake_flush(w) < 0)
            return -1;
        size_t m = CDB_BUF - w->used;
        if (m > n)
            m = n;
        memcpy(w->buf + w->used, p, m);
        w->used += m;
        p += m;
        n -= m;
    }
    return 0;
}

/* Up to n bytes of the regular file src from offset off copied to dst from a
 * mapping of them, made and unmade here: pread costs three times as much from the
 * page cache (it goes page by page through the kernel; measured on ext4, 27 ms
 * against 9 ms for 54 MB). The bytes copied; 0 past the file's end; -1 when src is
 * not a regular file or cannot be mapped (the caller reads instead). The source is
 * an installed data.cdb or a records file under the root's lock: a hand that
 * truncated it in place during the copy would end the process (SIGBUS) as a kill
 * does, before anything is installed. Touches no Python object. */
static inline ssize_t /* inline: _ccompile has no use for it */
cdbmake_mapped(unsigned char *dst, int src, uint64_t off, size_t n)
{
    struct stat st;
    if (fstat(src, &st) < 0 || !S_ISREG(st.st_mode))
        return -1;
    if (off >= (uint64_t)st.st_size)
        return 0;
    if (n > (uint64_t)st.st_size - off)
        n = (size_t)((uint64_t)st.st_size - off);
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE), start = off - off % page;
    size_t len = (size_t)(off - start) + n;
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, src, (off_t)start);
    if (m == MAP_FAILED)
        return -1;
    memcpy(dst, (unsigned char *)m + (off - start), n);
    munmap(m, len);
    return (ssize_t)n;
}

/* Up to n bytes of the open file src from offset off into the buffer after what it
 * holds (flushed first when full), without counting them as put: the caller may
 * change them (patches) before adding the count to w->used. A regular file's bytes
 * are copied from a mapping of them (cdbmake_mapped), else read: EINTR runs the
 * signal handlers and reads again; a source that ends early is CDBMAKE_SHORT. The
 * bytes read (> 0), or -1 with w->err set. */
static inline ssize_t /* inline: _ccompile has no use for it */
cdbmake_read(cdbmake *w, int src, uint64_t off, uint64_t n)
{
    if (w->used == CDB_BUF && cdbmake_flush(w) < 0)
        return -1;
    size_t room = CDB_BUF - w->used;
    size_t chunk = n > room ? room : (size_t)n;
    PyThreadState *ts = w->ts ? NULL : PyEval_SaveThread();
    ssize_t mapped = cdbmake_mapped(w->buf + w->used, src, off, chunk);
    if (ts)
        PyEval_RestoreThread(ts);
    if (mapped > 0)
        return mapped;
    if (mapped == 0) {
        w->err = CDBMAKE_SHORT;
        return -1;
    }
    for (;;) {
        ts = w->ts ? NULL : PyEval_SaveThread();
        ssize_t k = pread(src, w->buf + w->used, chunk, (off_t)off);
        int e = errno;
        if (ts)
            PyEval_RestoreThread(ts);
        if (k > 0)
            return k;
        if (k == 0) {
            w->err = CDBMAKE_SHORT;
            return -1;
        }
        if (e != EINTR) {
            w->err = e;
            return -1;
        }
        if (cdbmake_signals(w) < 0)
            return -1;
    }
}

/* n bytes of the open file src from offset off, after what is already put: in the
 * kernel (copy_file_range, no pages through user space and, on a file system that
 * shares extents, no copy at all), else through the buffer by cdbmake_read. Whatever
 * is buffered goes out first, so the output's own offset is where the copy lands. A
 * source that ends early is CDBMAKE_SHORT. 0, or -1 with w->err set. */
static inline int /* inline: _ccompile has no use for it */
cdbmake_copy(cdbmake *w, int src, uint64_t off, uint64_t n)
{
    int kernel = 1;
    if (n > 0 && cdbmake_flush(w) < 0)
        return -1;
    while (n > 0) {
        ssize_t k;
        if (!kernel) {
            k = cdbmake_read(w, src, off, n);
            if (k < 0)
                return -1;
            w->used += (size_t)k;
            off += (uint64_t)k;
            n -= (uint64_t)k;
            continue;
        }
        loff_t from = (loff_t)off;
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : (size_t)n;
        PyThreadState *ts = w->ts ? NULL : PyEval_SaveThread();
        k = copy_file_range(src, &from, w->fd, NULL, chunk, 0);
        int e = errno;
        if (ts)
            PyEval_RestoreThread(ts);
        if (k < 0 && (e == EXDEV || e == ENOSYS || e == EOPNOTSUPP || e == EINVAL ||
                      e == EBADF || e == ETXTBSY || e == EPERM)) {
            /* not between these two files (a pipe, another file system, an old
             * kernel): the same bytes by pread and write; a real EBADF recurs there */
            kernel = 0;
            continue;
        }
        if (k < 0) {
            if (e != EINTR) {
                w->err = e;
                return -1;
            }
            if (cdbmake_signals(w) < 0)
                return -1;
            continue;
        }
        if (k == 0) {
            w->err = CDBMAKE_SHORT;
            return -1;
        }
        off += (uint64_t)k;
        n -= (uint64_t)k;
        cdbmake_wrote(w, (uint64_t)k);
    }
    return 0;
}

/* 8.3: the header of a database whose n records (entries, in insertion order) end
 * at end. The tables follow the records, one after another; the header holds each
 * one's position and slot count (twice its records), empty ones included. count
 * gets each table's records. */
static void
cdbmake_header(unsigned char *header, uint32_t *count, const cdbmake_entry *entries,
               uint64_t n, uint32_t end)
{
    memset(count, 0, 256 * sizeof *count);
    for (uint64_t k = 0; k < n; k++)
        count[entries[k].h & 255]++;
    uint32_t tpos = end;
    for (int t = 0; t < 256; t++) {
        cdb_put_le32(header + 8 * t, tpos);
        cdb_put_le32(header + 8 * t + 4, 2 * count[t]);
        tpos += 16 * count[t];
    }
}

/* 8.3: after the records, each table: its records in insertion order at
 * (h >> 8) % slots, probing on; then everything still buffered goes out. count is
 * what cdbmake_header gave for the same entries. 0, or -1 with w->err set. */
static int
cdbmake_finish(cdbmake *w, const cdbmake_entry *entries, uint64_t n, const uint32_t *count)
{
    uint32_t start[256], most = 0, u = 0;
    for (int t = 0; t < 256; t++) {
        if (count[t] > most)
            most = count[t];
        start[t] = u;
        u += count[t];
    }
    /* the records grouped by table, each group in insertion order */
    cdbmake_entry *split = PyMem_RawMalloc(((size_t)n + 1) * sizeof *split);
    cdbmake_entry *slots = PyMem_RawMalloc(((size_t)most * 2 + 1) * sizeof *slots);
    int rc = -1;
    if (split == NULL || slots == NULL) {
        w->err = CDBMAKE_NO_MEMORY;
        goto done;
    }
    for (uint64_t k = 0; k < n; k++)
        split[start[entries[k].h & 255]++] = entries[k];
    const cdbmake_entry *e = split;
    for (int t = 0; t < 256; t++) {
        uint32_t len = 2 * count[t];
        if (!len)
            continue;
        uint64_t m = cdb_fastmod_m(len);
        memset(slots, 0, len * sizeof *slots);
        for (uint32_t j = 0; j < count[t]; j++, e++) {
            uint32_t s = cdb_fastmod(e->h >> 8, m, len);
            while (slots[s].p) /* records start at 2048 or later: 0 is free */
                if (++s == len)
                    s = 0;
            slots[s] = *e;
        }
#if CDB_LE_ENTRIES
        if (cdbmake_put(w, slots, (size_t)len * sizeof *slots) < 0)
            goto done;
#else
        for (uint32_t s = 0; s < len; s++) {
            if (w->used + 8 > CDB_BUF && cdbmake_flush(w) < 0)
                goto done;
            cdb_put_le32(w->buf + w->used, slots[s].h);
            cdb_put_le32(w->buf + w->used + 4, slots[s].p);
            w->used += 8;
        }
#endif
    }
    rc = cdbmake_flush(w);
done:
    PyMem_RawFree(split);
    PyMem_RawFree(slots);
    return rc;
}

/* With the GIL: the exception for w->err (none to add for CDBMAKE_RAISED, whose is
 * set). Too large is dnsmaster.errors.CdbTooLarge with its own message. */
static void
cdbmake_raise(const cdbmake *w)
{
    if (w->err > 0) {
        errno = w->err;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    else if (w->err == CDBMAKE_NO_MEMORY)
        PyErr_NoMemory();
    else if (w->err == CDBMAKE_SHORT)
        PyErr_SetString(PyExc_ValueError, "a piece runs past the end of its file");
    else if (w->err == CDBMAKE_TOO_LARGE) {
        PyObject *mod = PyImport_ImportModule("dnsmaster.errors");
        if (mod == NULL)
            return;
        PyObject *cls = PyObject_GetAttrString(mod, "CdbTooLarge");
        Py_DECREF(mod);
        if (cls == NULL)
            return;
        PyErr_SetNone(cls);
        Py_DECREF(cls);
    }
}

#endif
