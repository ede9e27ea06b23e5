/*
 * Optional accelerator for dnsmaster.core.cdb's packed records: a source's cdb
 * records kept as ONE blob in cdb's record layout (spec 8.3: klen u32le, dlen
 * u32le, key, data, repeated), plus the offsets in the blob where the build's
 * SOA serial goes (4 bytes, big-endian: the first of an SOA's five numbers, 20
 * bytes before the end of its data). A build from a hundred such blobs makes no
 * Python object per record. cdb.py holds the pure-Python reference of each
 * function; tests hold them to the same bytes and the same refusals.
 *
 * pack(keys, values, soa_defaults) -> (blob, serials)
 *
 *   The records keys[i] -> values[i] as one blob; serials are the offsets of the
 *   serials of records soa_defaults (indexes, ascending), as a tuple of ints.
 *
 * scan(blob, serials) -> int
 *
 *   The number of records in blob; ValueError when blob is not whole records or
 *   an offset of serials is not the serial place of a record (ascending, each of
 *   a record whose data has the 20 bytes of SOA numbers). Without the GIL.
 *
 * write(fd, blobs, serials, serial) -> None
 *
 *   Writes to fd the cdb of every record of blobs[0], blobs[1], ... in order,
 *   with the 32-bit serial written big-endian at every offset of serials[i] in
 *   blobs[i]: the bytes of cdb.dumps over the same records. Each blob is checked
 *   as scan does before anything is written; CdbTooLarge past 4 GiB. Everything
 *   after the arguments are taken runs without the GIL: blobs are buffers the
 *   call holds until it returns. The cdb itself is made by cdbmake.h, which
 *   _ccompile.c's write_cdb shares.
 *
 * places(blob, serial) -> list
 *
 *   The offsets in blob of the serials (as Packed's serials count them) of its
 *   SOA records whose serial is serial; ValueError when blob is not whole records.
 *
 * write_pieces(fd, pieces, patches, pairs) -> None
 *
 *   Writes to fd the cdb of the records of every piece in order, each piece a
 *   tuple (src, offset, length, count, blob, index): length bytes of records
 *   (count of them) in blob when it is not None, else at offset in the open file
 *   src, copied by the kernel (copy_file_range, else pread). index, when not
 *   None, holds count (hash, position) pairs, u32 little-endian, each position
 *   where a record starts as offset counts (in src; in blob, plus offset): the
 *   records are then not read at all; else they are read in bounded chunks to
 *   hash their keys. pairs, when >= 0, is an fd that gets the written cdb's own
 *   (hash, position) pairs in that layout, in order: an index of its records.
 *   The disk's writeback of fd is started every few MiB as it is written
 *   (cdbmake.h's kick), for the fsync that follows. patches are (offset, 4 bytes) pairs,
 *   ascending, the offset counted from the first record's first byte, each inside
 *   a record's data (checked where the records are read). Memory: the
 *   (hash, position) pairs and the tables, never the records.
 *
 * swap(buffer, old, new) -> int
 *
 *   Every old in the writable buffer replaced by new (as long as old) where it
 *   stands, left to right and not overlapping, as bytes.replace would: the
 *   receiver restamps the data it copies in its one read buffer, making no new
 *   bytes per chunk. The number replaced.
 *
 * kick(fd, offset, length) -> None
 *
 *   Starts the disk's writeback of that range (sync_file_range, as write_pieces
 *   does as it goes): a file fsynced once whole then waits for its tail only. A
 *   hint, so nothing is raised.
 *
 * restamp(buffer, old, new) -> int
 *
 *   swap, then bytes.count(new) over the buffer: how many new it holds now. One
 *   pass when old and new share their first 4 bytes or more (a serial and the next
 *   one do): the receiver restamps and counts every chunk of the data it writes.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "cdbmake.h"

#define SOA_NUMBERS 20

/* One blob and its serial offsets, as the C code sees them. */
typedef struct {
    const unsigned char *p;
    uint64_t n;
    uint64_t *serials;
    Py_ssize_t nserials;
} blob;

/* Reasons a blob is refused; scan raises ValueError with them. */
static const char *const REFUSED[] = {
    NULL,
    "a record runs past the end of the records",
    "a serial offset is not the serial of an SOA record",
};

/* Walk b's records: count them and check the serial offsets against them; with
 * out, also the hash and position (from pos on) of each, appended to out. Returns
 * 0 (count in *count), or the index of the reason in REFUSED. No Python calls. */
static int
walk(const blob *b, uint64_t *count, cdbmake_entry *out, uint64_t pos)
{
    uint64_t at = 0, k = 0;
    Py_ssize_t s = 0;
    while (at < b->n) {
        if (b->n - at < 8)
            return 1;
        uint32_t klen = cdb_get_le32(b->p + at), dlen = cdb_get_le32(b->p + at + 4);
        uint64_t end = at + 8 + (uint64_t)klen + dlen;
        if (end > b->n)
            return 1;
        if (s < b->nserials && b->serials[s] < end) {
            const unsigned char *type = b->p + at + 8 + klen; /* the value's first bytes */
            if (dlen < SOA_NUMBERS || b->serials[s] != end - SOA_NUMBERS || type[0] != 0 ||
                type[1] != 6)
                return 2;
            s++;
        }
        if (out != NULL) {
            out[k].h = cdb_hash(b->p + at + 8, klen);
            out[k].p = (uint32_t)(pos + at);
        }
        k++;
        at = end;
    }
    if (s != b->nserials)
        return 2; /* past the records, or two at one place */
    *count = k;
    return 0;
}

/* serials (a sequence of ints) as a malloc'ed array; NULL with an exception set. */
static uint64_t *
offsets(PyObject *serials, Py_ssize_t *n)
{
    PyObject *seq = PySequence_Fast(serials, "serials must be a sequence of ints");
    if (seq == NULL)
        return NULL;
    *n = PySequence_Fast_GET_SIZE(seq);
    uint64_t *out = PyMem_RawMalloc(((size_t)*n + 1) * sizeof *out);
    if (out == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_SetString(PyExc_ValueError, REFUSED[2]);
            }
            PyMem_RawFree(out);
            Py_DECREF(seq);
            return NULL;
        }
        out[i] = v;
    }
    Py_DECREF(seq);
    return out;
}

static PyObject *
pack(PyObject *self, PyObject *args)
{
    PyObject *keys, *values, *soa, *ks = NULL, *vs = NULL, *ss = NULL, *blob_obj = NULL;
    PyObject *result = NULL, *where = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO:pack", &keys, &values, &soa))
        return NULL;
    ks = PySequence_Fast(keys, "keys must be a sequence");
    vs = ks ? PySequence_Fast(values, "values must be a sequence") : NULL;
    ss = vs ? PySequence_Fast(soa, "soa_defaults must be a sequence") : NULL;
    if (ss == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ks), nsoa = PySequence_Fast_GET_SIZE(ss);
    if (PySequence_Fast_GET_SIZE(vs) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and values differ in length");
        goto done;
    }
    PyObject **kv = PySequence_Fast_ITEMS(ks), **vv = PySequence_Fast_ITEMS(vs);
    uint64_t size = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(kv[i]) || !PyBytes_Check(vv[i])) {
            PyErr_Format(PyExc_TypeError, "record %zd: keys and values must be bytes", i);
            goto done;
        }
        Py_ssize_t klen = PyBytes_GET_SIZE(kv[i]), vlen = PyBytes_GET_SIZE(vv[i]);
        if ((uint64_t)klen >= CDB_LIMIT || (uint64_t)vlen >= CDB_LIMIT) {
            PyErr_SetString(PyExc_ValueError, "a record of 4 GiB or more");
            goto done;
        }
        size += 8 + (uint64_t)klen + (uint64_t)vlen;
    }
    if (size > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    blob_obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    where = PyTuple_New(nsoa);
    if (blob_obj == NULL || where == NULL)
        goto done;
    unsigned char *d = (unsigned char *)PyBytes_AS_STRING(blob_obj);
    uint64_t at = 0;
    Py_ssize_t s = 0, next = -1;
    if (nsoa > 0 && (next = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(ss, 0))) == -1 &&
        PyErr_Occurred())
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t klen = PyBytes_GET_SIZE(kv[i]), vlen = PyBytes_GET_SIZE(vv[i]);
        cdb_put_le32(d + at, (uint32_t)klen);
        cdb_put_le32(d + at + 4, (uint32_t)vlen);
        memcpy(d + at + 8, PyBytes_AS_STRING(kv[i]), (size_t)klen);
        memcpy(d + at + 8 + klen, PyBytes_AS_STRING(vv[i]), (size_t)vlen);
        at += 8 + (uint64_t)klen + (uint64_t)vlen;
        if (i == next) {
            if (vlen < SOA_NUMBERS) {
                PyErr_Format(PyExc_ValueError, "record %zd: too short for an SOA serial", i);
                goto done;
            }
            PyObject *o = PyLong_FromUnsignedLongLong(at - SOA_NUMBERS);
            if (o == NULL)
                goto done;
            PyTuple_SET_ITEM(where, s, o);
            s++;
            next = -1;
            if (s < nsoa && (next = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(ss, s))) == -1 &&
                PyErr_Occurred())
                goto done;
            if (s < nsoa && next <= i) {
                PyErr_SetString(PyExc_ValueError, "soa_defaults must be ascending");
                goto done;
            }
        }
    }
    if (s != nsoa) {
        PyErr_SetString(PyExc_ValueError, "an index of soa_defaults past the records");
        goto done;
    }
    result = PyTuple_Pack(2, blob_obj, where);
done:
    Py_XDECREF(blob_obj);
    Py_XDECREF(where);
    Py_XDECREF(ks);
    Py_XDECREF(vs);
    Py_XDECREF(ss);
    return result;
}

static PyObject *
scan(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *serials;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*O:scan", &view, &serials))
        return NULL;
    blob b = {view.buf, (uint64_t)view.len, NULL, 0};
    b.serials = offsets(serials, &b.nserials);
    if (b.serials == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    uint64_t count = 0;
    int refused;
    Py_BEGIN_ALLOW_THREADS
    refused = walk(&b, &count, NULL, 0);
    Py_END_ALLOW_THREADS
    PyMem_RawFree(b.serials);
    PyBuffer_Release(&view);
    if (refused) {
        PyErr_SetString(PyExc_ValueError, REFUSED[refused]);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(count);
}

/* ---- write: cdb_make (cdbmake.h) fed from blobs ---- */

/* A blob's records with the serial at each of its offsets. */
static int
put_blob(cdbmake *w, const blob *b, const unsigned char *serial)
{
    uint64_t at = 0;
    for (Py_ssize_t s = 0; s < b->nserials; s++) {
        if (cdbmake_put(w, b->p + at, (size_t)(b->serials[s] - at)) < 0 ||
            cdbmake_put(w, serial, 4) < 0)
            return -1;
        at = b->serials[s] + 4;
    }
    return cdbmake_put(w, b->p + at, (size_t)(b->n - at));
}

/* Without the GIL: check and hash every blob, then write header, records, tables.
 * 0; or the index of a reason in REFUSED; or -1 with w->err set. */
static int
write_all(cdbmake *w, const blob *bs, Py_ssize_t nb, uint32_t serial)
{
    unsigned char header[CDB_HEADER], stamp[4];
    uint32_t count[256];
    uint64_t pos = CDB_HEADER, n = 0;
    for (Py_ssize_t i = 0; i < nb; i++)
        pos += bs[i].n;
    if (pos >= CDB_LIMIT) {
        w->err = CDBMAKE_TOO_LARGE;
        return -1;
    }
    /* each record is at least 8 bytes: a bound for the table of hashes */
    cdbmake_entry *entries = PyMem_RawMalloc((size_t)((pos - CDB_HEADER) / 8 + 1) * sizeof *entries);
    int rc = -1;
    if (entries == NULL) {
        w->err = CDBMAKE_NO_MEMORY;
        goto done;
    }
    pos = CDB_HEADER;
    for (Py_ssize_t i = 0; i < nb; i++) {
        uint64_t k = 0;
        rc = walk(&bs[i], &k, entries + n, pos);
        if (rc)
            goto done;
        n += k;
        pos += bs[i].n;
    }
    rc = -1;
    if (!cdbmake_fits(pos, n)) {
        w->err = CDBMAKE_TOO_LARGE;
        goto done;
    }
    cdbmake_header(header, count, entries, n, (uint32_t)pos);
    stamp[0] = (unsigned char)(serial >> 24); /* big-endian, as in the SOA record */
    stamp[1] = (unsigned char)(serial >> 16);
    stamp[2] = (unsigned char)(serial >> 8);
    stamp[3] = (unsigned char)serial;
    if (cdbmake_put(w, header, CDB_HEADER) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < nb; i++)
        if (put_blob(w, &bs[i], stamp) < 0)
            goto done;
    rc = cdbmake_finish(w, entries, n, count);
done:
    PyMem_RawFree(entries);
    return rc;
}

static PyObject *
write_cdb(PyObject *self, PyObject *args)
{
    int fd;
    unsigned long serial;
    PyObject *blobs, *serials, *bseq = NULL, *sseq = NULL, *result = NULL;
    Py_buffer *views = NULL;
    blob *bs = NULL;
    Py_ssize_t nb = 0, got = 0;
    cdbmake w = {0};
    (void)self;
    if (!PyArg_ParseTuple(args, "iOOk:write", &fd, &blobs, &serials, &serial))
        return NULL;
    bseq = PySequence_Fast(blobs, "blobs must be a sequence");
    sseq = bseq ? PySequence_Fast(serials, "serials must be a sequence") : NULL;
    if (sseq == NULL)
        goto done;
    nb = PySequence_Fast_GET_SIZE(bseq);
    if (PySequence_Fast_GET_SIZE(sseq) != nb) {
        PyErr_SetString(PyExc_ValueError, "blobs and serials differ in length");
        goto done;
    }
    views = PyMem_Calloc((size_t)nb + 1, sizeof *views);
    bs = PyMem_Calloc((size_t)nb + 1, sizeof *bs);
    if (views == NULL || bs == NULL || cdbmake_open(&w, fd) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < nb; got++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(bseq, got), &views[got],
                               PyBUF_SIMPLE) < 0)
            goto done;
        bs[got].p = views[got].buf;
        bs[got].n = (uint64_t)views[got].len;
        bs[got].serials = offsets(PySequence_Fast_GET_ITEM(sseq, got), &bs[got].nserials);
        if (bs[got].serials == NULL) {
            PyBuffer_Release(&views[got]);
            goto done;
        }
    }
    cdbmake_release(&w);
    int rc = write_all(&w, bs, nb, (uint32_t)(serial & 0xFFFFFFFFul));
    cdbmake_acquire(&w);
    if (rc > 0)
        PyErr_SetString(PyExc_ValueError, REFUSED[rc]);
    else if (rc < 0)
        cdbmake_raise(&w);
    else
        result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        PyBuffer_Release(&views[i]);
        PyMem_RawFree(bs[i].serials);
    }
    PyMem_Free(views);
    PyMem_Free(bs);
    cdbmake_close(&w);
    Py_XDECREF(bseq);
    Py_XDECREF(sseq);
    return result;
}

/* ---- places: where the SOA records of a serial hold it ---- */

static PyObject *
places(PyObject *self, PyObject *args)
{
    Py_buffer view;
    unsigned long serial;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*k:places", &view, &serial))
        return NULL;
    PyObject *out = PyList_New(0);
    const unsigned char *p = view.buf;
    uint64_t n = (uint64_t)view.len, at = 0;
    unsigned char want[4] = {(unsigned char)(serial >> 24), (unsigned char)(serial >> 16),
                             (unsigned char)(serial >> 8), (unsigned char)serial};
    while (out != NULL && at < n) {
        if (n - at < 8) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_ValueError, REFUSED[1]);
            break;
        }
        uint32_t klen = cdb_get_le32(p + at), dlen = cdb_get_le32(p + at + 4);
        uint64_t end = at + 8 + (uint64_t)klen + dlen;
        if (end > n) {
            Py_CLEAR(out);
            PyErr_SetString(PyExc_ValueError, REFUSED[1]);
            break;
        }
        const unsigned char *value = p + at + 8 + klen;
        if (dlen >= SOA_NUMBERS && value[0] == 0 && value[1] == 6 &&
            memcmp(p + end - SOA_NUMBERS, want, 4) == 0) {
            PyObject *o = PyLong_FromUnsignedLongLong(end - SOA_NUMBERS);
            if (o == NULL || PyList_Append(out, o) < 0)
                Py_CLEAR(out);
            Py_XDECREF(o);
        }
        at = end;
    }
    PyBuffer_Release(&view);
    return out;
}

/* ---- write_pieces: cdb_make from ranges of records in files or in memory ---- */

#define PIECE_CHUNK CDB_BUF /* the window doubles as the pairs' write buffer */

static const char *const PIECE_REFUSED[] = {
    NULL,
    "a record runs past the end of the records",
    "a piece does not hold the count of records it states",
    "an index does not fit its piece (8 bytes a record, positions ascending from 0)",
    "a patch is not inside a record's data",
};

typedef struct {
    int src;
    uint64_t offset, length, count;
    const unsigned char *mem;   /* the records in memory, or NULL: in src */
    const unsigned char *index; /* count (hash, position) pairs, or NULL */
} piece;

typedef struct {
    uint64_t at;
    unsigned char bytes[4];
} patch;

/* A window on a piece held in a file: bytes start..start+have at buf. */
typedef struct {
    unsigned char *buf;
    size_t cap, have;
    uint64_t start;
} window;

/* Bytes at..at+n of the piece (all inside it) at the returned pointer; NULL with
 * w->err set. Reads from at on, up to the window's size, so each byte is read about
 * once however the records fall. */
static const unsigned char *
view(cdbmake *w, window *win, const piece *pc, uint64_t at, size_t n)
{
    if (pc->mem != NULL)
        return pc->mem + at;
    if (at >= win->start && at + n <= win->start + win->have)
        return win->buf + (at - win->start);
    if (n > win->cap) {
        unsigned char *bigger = PyMem_RawRealloc(win->buf, n);
        if (bigger == NULL) {
            w->err = CDBMAKE_NO_MEMORY;
            return NULL;
        }
        win->buf = bigger;
        win->cap = n;
    }
    uint64_t left = pc->length - at;
    size_t want = left < win->cap ? (size_t)left : win->cap, got = 0;
    while (got < want) {
        ssize_t k = pread(pc->src, win->buf + got, want - got, (off_t)(pc->offset + at + got));
        if (k < 0) {
            if (errno != EINTR) {
                w->err = errno;
                return NULL;
            }
            if (cdbmake_signals(w) < 0)
                return NULL;
            continue;
        }
        if (k == 0) {
            w->err = CDBMAKE_SHORT;
            return NULL;
        }
        got += (size_t)k;
    }
    win->start = at;
    win->have = got;
    return win->buf;
}

/* The (hash, position) of every record of pc into out, positions from base; the
 * patches from *next on that fall before its end checked against its records.
 * 0; an index in PIECE_REFUSED; or -1 with w->err set. */
static int
index_piece(cdbmake *w, window *win, const piece *pc, uint64_t base, cdbmake_entry *out,
            const patch *patches, Py_ssize_t npatches, Py_ssize_t *next)
{
    uint64_t at = 0, k = 0, area = base - CDB_HEADER; /* base as a patch counts it */
    Py_ssize_t s = *next;
    if (pc->index != NULL) {
        for (k = 0; k < pc->count; k++) {
            /* positions in the file, as offset counts: relative to the piece here */
            uint32_t h = cdb_get_le32(pc->index + 8 * k);
            uint64_t p = (uint64_t)cdb_get_le32(pc->index + 8 * k + 4) - pc->offset;
            uint64_t end = k + 1 < pc->count
                               ? (uint64_t)cdb_get_le32(pc->index + 8 * k + 12) - pc->offset
                               : pc->length;
            if ((k == 0 && p != 0) || end <= p || end > pc->length || end - p < 8)
                return 3;
            for (; s < npatches && patches[s].at < area + end; s++)
                if (patches[s].at < area + p + 8 || patches[s].at + 4 > area + end)
                    return 4;
            out[k].h = h;
            out[k].p = (uint32_t)(base + p);
        }
        *next = s;
        return 0;
    }
    while (at < pc->length) {
        if (pc->length - at < 8)
            return 1;
        const unsigned char *r = view(w, win, pc, at, 8);
        if (r == NULL)
            return -1;
        uint32_t klen = cdb_get_le32(r), dlen = cdb_get_le32(r + 4);
        uint64_t end = at + 8 + (uint64_t)klen + dlen;
        if (end > pc->length)
            return 1;
        if (k == pc->count)
            return 2;
        r = view(w, win, pc, at, 8 + (size_t)klen);
        if (r == NULL)
            return -1;
        for (; s < npatches && patches[s].at < area + end; s++)
            if (patches[s].at < area + at + 8 + klen || patches[s].at + 4 > area + end)
                return 4;
        out[k].h = cdb_hash(r + 8, klen);
        out[k].p = (uint32_t)(base + at);
        k++;
        at = end;
    }
    if (k != pc->count)
        return 2;
    *next = s;
    return 0;
}

/* Unpatched stretches of a file piece at least this long go by a kernel copy; shorter
 * ones, and the patches between them, are read through the write buffer and patched
 * there. A kernel copy saves the trip through user space but costs a flush and a
 * system call or two: a restamp patches every zone's SOA, 40,000 patches a few KiB
 * apart at 1M lines, and stopping the copy at each of them cost three times the
 * copying itself. */
#define PATCH_GAP (64 * 1024)

/* Bytes from..to of the file piece pc through the write buffer (cdbmake_read, in
 * chunks of what room it has, so memory stays CDB_BUF), with the patches from *next
 * on that fall before to written over them, a part of one where it straddles two
 * reads. */
static int
put_read(cdbmake *w, const piece *pc, uint64_t from, uint64_t to, uint64_t area,
         const patch *patches, Py_ssize_t npatches, Py_ssize_t *next)
{
    uint64_t at = from;
    while (at < to) {
        ssize_t k = cdbmake_read(w, pc->src, pc->offset + at, to - at);
        if (k < 0)
            return -1;
        uint64_t lo = area + at, hi = lo + (uint64_t)k;
        unsigned char *base = w->buf + w->used;
        Py_ssize_t s = *next;
        while (s < npatches && patches[s].at < hi) {
            for (int b = 0; b < 4; b++) {
                uint64_t q = patches[s].at + (uint64_t)b;
                if (q >= lo && q < hi)
                    base[q - lo] = patches[s].bytes[b];
            }
            if (patches[s].at + 4 > hi)
                break; /* its rest is in the next read */
            s++;
        }
        *next = s;
        w->used += (size_t)k;
        at += (uint64_t)k;
    }
    return 0;
}

/* The piece's records with the patches that fall in them, after what is put. A file
 * piece goes by kernel copies for its unpatched stretches of PATCH_GAP or more, and
 * through the buffer for the rest. */
static int
put_piece(cdbmake *w, const piece *pc, uint64_t area, const patch *patches, Py_ssize_t npatches,
          Py_ssize_t *next)
{
    uint64_t at = 0;
    if (pc->mem != NULL) {
        for (;; (*next)++) {
            int last = *next >= npatches || patches[*next].at >= area + pc->length;
            uint64_t upto = last ? pc->length : patches[*next].at - area;
            if (cdbmake_put(w, pc->mem + at, (size_t)(upto - at)) < 0)
                return -1;
            if (last)
                return 0;
            if (cdbmake_put(w, patches[*next].bytes, 4) < 0)
                return -1;
            at = upto + 4;
        }
    }
    /* at: the end of the last patch seen; pending: where the bytes not put yet start */
    uint64_t pending = 0;
    for (Py_ssize_t s = *next;; s++) {
        int last = s >= npatches || patches[s].at >= area + pc->length;
        uint64_t upto = last ? pc->length : patches[s].at - area;
        if (upto - at >= PATCH_GAP) {
            if (put_read(w, pc, pending, at, area, patches, npatches, next) < 0 ||
                cdbmake_copy(w, pc->src, pc->offset + at, upto - at) < 0)
                return -1;
            pending = upto;
        }
        if (last)
            break;
        at = upto + 4;
    }
    return put_read(w, pc, pending, pc->length, area, patches, npatches, next);
}

/* Without the GIL: index every piece, then write header, records, tables. 0; an
 * index in PIECE_REFUSED; or -1 with w->err set. */
static int
write_pieces_all(cdbmake *w, const piece *pcs, Py_ssize_t np, const patch *patches,
                 Py_ssize_t npatches, int pairs)
{
    unsigned char header[CDB_HEADER];
    uint32_t count[256];
    uint64_t pos = CDB_HEADER, n = 0;
    window win = {NULL, 0, 0, 0};
    int rc = -1;
    for (Py_ssize_t i = 0; i < np; i++) {
        pos += pcs[i].length;
        n += pcs[i].count;
        if (pcs[i].count > pcs[i].length / 8)
            return 2;
    }
    if (!cdbmake_fits(pos, n)) {
        w->err = CDBMAKE_TOO_LARGE;
        return -1;
    }
    for (Py_ssize_t s = 0; s < npatches; s++)
        if ((s > 0 && patches[s].at < patches[s - 1].at + 4) || patches[s].at + 4 > pos - CDB_HEADER)
            return 4;
    cdbmake_entry *entries = PyMem_RawMalloc(((size_t)n + 1) * sizeof *entries);
    win.buf = PyMem_RawMalloc(PIECE_CHUNK);
    win.cap = PIECE_CHUNK;
    if (entries == NULL || win.buf == NULL) {
        w->err = CDBMAKE_NO_MEMORY;
        goto done;
    }
    pos = CDB_HEADER;
    n = 0;
    Py_ssize_t next = 0;
    for (Py_ssize_t i = 0; i < np; i++) {
        win.have = 0;
        rc = index_piece(w, &win, &pcs[i], pos, entries + n, patches, npatches, &next);
        if (rc)
            goto done;
        n += pcs[i].count;
        pos += pcs[i].length;
    }
    rc = -1;
    if (pairs >= 0) {
        /* the pairs as the file holds them: little-endian u32, whatever this CPU is */
        cdbmake out = {pairs, win.buf, 0, w->ts, 0, 0, 0, 0};
#if CDB_LE_ENTRIES
        if (cdbmake_out(&out, (const unsigned char *)entries, (size_t)n * sizeof *entries, -1) < 0) {
            w->err = out.err;
            goto done;
        }
#else
        unsigned char pair[8];
        for (uint64_t k = 0; k < n; k++) {
            cdb_put_le32(pair, entries[k].h);
            cdb_put_le32(pair + 4, entries[k].p);
            if (cdbmake_put(&out, pair, 8) < 0) {
                w->err = out.err;
                goto done;
            }
        }
#endif
        if (cdbmake_flush(&out) < 0) {
            w->err = out.err;
            goto done;
        }
    }
    cdbmake_header(header, count, entries, n, (uint32_t)pos);
    if (cdbmake_put(w, header, CDB_HEADER) < 0)
        goto done;
    next = 0;
    uint64_t area = 0;
    for (Py_ssize_t i = 0; i < np; i++) {
        if (put_piece(w, &pcs[i], area, patches, npatches, &next) < 0)
            goto done;
        area += pcs[i].length;
    }
    rc = cdbmake_finish(w, entries, n, count);
done:
    PyMem_RawFree(entries);
    PyMem_RawFree(win.buf);
    return rc;
}

static PyObject *
write_pieces(PyObject *self, PyObject *args)
{
    int fd, pairs;
    PyObject *pieces, *patches, *pseq = NULL, *tseq = NULL, *result = NULL;
    Py_buffer *views = NULL; /* two per piece: blob, index */
    piece *pcs = NULL;
    patch *pts = NULL;
    Py_ssize_t np = 0, nt = 0;
    cdbmake w = {0};
    (void)self;
    if (!PyArg_ParseTuple(args, "iOOi:write_pieces", &fd, &pieces, &patches, &pairs))
        return NULL;
    pseq = PySequence_Fast(pieces, "pieces must be a sequence");
    tseq = pseq ? PySequence_Fast(patches, "patches must be a sequence") : NULL;
    if (tseq == NULL)
        goto done;
    np = PySequence_Fast_GET_SIZE(pseq);
    nt = PySequence_Fast_GET_SIZE(tseq);
    views = PyMem_Calloc(2 * (size_t)np + 1, sizeof *views);
    pcs = PyMem_Calloc((size_t)np + 1, sizeof *pcs);
    pts = PyMem_Calloc((size_t)nt + 1, sizeof *pts);
    if (views == NULL || pcs == NULL || pts == NULL || cdbmake_open(&w, fd) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    w.kick = 1; /* every caller fsyncs the file once it is whole */
    for (Py_ssize_t i = 0; i < nt; i++) {
        unsigned long long at;
        Py_buffer b;
        PyObject *item = PySequence_Fast_GET_ITEM(tseq, i);
        if (PyTuple_CheckExact(item) && PyTuple_GET_SIZE(item) == 2 &&
            PyLong_CheckExact(PyTuple_GET_ITEM(item, 0)) &&
            PyBytes_CheckExact(PyTuple_GET_ITEM(item, 1)) &&
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1)) == 4) {
            /* a restamp's 40,000 (int, bytes) pairs at 1M lines: not through the
             * argument parser, which cost more than the patching */
            at = PyLong_AsUnsignedLongLongMask(PyTuple_GET_ITEM(item, 0)); /* as "K" */
            if (at == (unsigned long long)-1 && PyErr_Occurred())
                goto done;
            memcpy(pts[i].bytes, PyBytes_AS_STRING(PyTuple_GET_ITEM(item, 1)), 4);
            pts[i].at = at;
            continue;
        }
        if (!PyArg_ParseTuple(item, "Ky*:patch", &at, &b))
            goto done;
        int four = b.len == 4;
        if (four)
            memcpy(pts[i].bytes, b.buf, 4);
        PyBuffer_Release(&b);
        if (!four) {
            PyErr_SetString(PyExc_ValueError, "a patch is 4 bytes");
            goto done;
        }
        pts[i].at = at;
    }
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *blob, *index;
        unsigned long long offset, length, count;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(pseq, i), "iKKKOO:piece", &pcs[i].src,
                              &offset, &length, &count, &blob, &index))
            goto done;
        pcs[i].offset = offset;
        pcs[i].length = length;
        pcs[i].count = count;
        if (blob != Py_None) {
            if (PyObject_GetBuffer(blob, &views[2 * i], PyBUF_SIMPLE) < 0)
                goto done;
            pcs[i].mem = views[2 * i].buf;
            if ((uint64_t)views[2 * i].len != length) {
                PyErr_SetString(PyExc_ValueError, "a piece's blob is not its length");
                goto done;
            }
        }
        if (index != Py_None) {
            if (PyObject_GetBuffer(index, &views[2 * i + 1], PyBUF_SIMPLE) < 0)
                goto done;
            pcs[i].index = views[2 * i + 1].buf;
            if ((uint64_t)views[2 * i + 1].len != 8 * count) {
                PyErr_SetString(PyExc_ValueError, PIECE_REFUSED[3]);
                goto done;
            }
        }
    }
    cdbmake_release(&w);
    int rc = write_pieces_all(&w, pcs, np, pts, nt, pairs);
    cdbmake_acquire(&w);
    if (rc > 0)
        PyErr_SetString(PyExc_ValueError, PIECE_REFUSED[rc]);
    else if (rc < 0)
        cdbmake_raise(&w);
    else
        result = Py_NewRef(Py_None);
done:
    for (Py_ssize_t i = 0; views != NULL && i < 2 * np; i++)
        if (views[i].obj != NULL)
            PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    PyMem_Free(pcs);
    PyMem_Free(pts);
    cdbmake_close(&w);
    Py_XDECREF(pseq);
    Py_XDECREF(tseq);
    return result;
}

static PyObject *
swap(PyObject *self, PyObject *args)
{
    Py_buffer buf, old, new;
    Py_ssize_t count = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*y*:swap", &buf, &old, &new))
        return NULL;
    if (old.len == 0 || old.len != new.len) {
        PyBuffer_Release(&buf);
        PyBuffer_Release(&old);
        PyBuffer_Release(&new);
        PyErr_SetString(PyExc_ValueError, "swap needs old and new of one length, not empty");
        return NULL;
    }
    unsigned char *p = buf.buf, *end = p + buf.len;
    while ((size_t)(end - p) >= (size_t)old.len) {
        unsigned char *q = memmem(p, (size_t)(end - p), old.buf, (size_t)old.len);
        if (q == NULL)
            break;
        memcpy(q, new.buf, (size_t)new.len);
        p = q + old.len;
        count++;
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&old);
    PyBuffer_Release(&new);
    return PyLong_FromSsize_t(count);
}

static PyObject *
kick(PyObject *self, PyObject *args)
{
    int fd;
    long long offset, length;
    (void)self;
    if (!PyArg_ParseTuple(args, "iLL:kick", &fd, &offset, &length))
        return NULL;
#ifdef SYNC_FILE_RANGE_WRITE
    Py_BEGIN_ALLOW_THREADS
    (void)sync_file_range(fd, (off64_t)offset, (off64_t)length, SYNC_FILE_RANGE_WRITE);
    Py_END_ALLOW_THREADS
#else
    (void)fd;
    (void)offset;
    (void)length;
#endif
    Py_RETURN_NONE;
}

/* How many needle (n bytes) the buffer holds, as bytes.count counts them. */
static Py_ssize_t
count_in(const unsigned char *p, const unsigned char *end, const unsigned char *needle,
         size_t n)
{
    Py_ssize_t found = 0;
    while ((size_t)(end - p) >= n) {
        const unsigned char *q = memmem(p, (size_t)(end - p), needle, n);
        if (q == NULL)
            break;
        p = q + n;
        found++;
    }
    return found;
}

static PyObject *
restamp(PyObject *self, PyObject *args)
{
    Py_buffer buf, old, new;
    Py_ssize_t found = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*y*y*:restamp", &buf, &old, &new))
        return NULL;
    if (old.len == 0 || old.len != new.len) {
        PyBuffer_Release(&buf);
        PyBuffer_Release(&old);
        PyBuffer_Release(&new);
        PyErr_SetString(PyExc_ValueError, "restamp needs old and new of one length, not empty");
        return NULL;
    }
    const unsigned char *o = old.buf, *w = new.buf;
    size_t n = (size_t)old.len, k = 0;
    while (k < n && o[k] == w[k])
        k++;
    unsigned char *p = buf.buf, *end = p + buf.len;
    if (k < 4) {
        /* too short a prefix to search for: replace, then count */
        unsigned char *at = p;
        while ((size_t)(end - at) >= n) {
            unsigned char *q = memmem(at, (size_t)(end - at), o, n);
            if (q == NULL)
                break;
            memcpy(q, w, n);
            at = q + n;
        }
        found = count_in(p, end, w, n);
    }
    else {
        /* One pass over the places where old or new may start (their common
         * prefix): each is replaced where bytes.replace would (left to right, not
         * overlapping) and counted where bytes.count would find new in the result. A
         * place after this one could only change this one's bytes by overlapping it,
         * and two of old or new overlap at most in a byte both hold alike. */
        unsigned char *replace_from = p, *count_from = p;
        while ((size_t)(end - p) >= n) {
            unsigned char *q = memmem(p, (size_t)(end - p), o, k);
            if (q == NULL || (size_t)(end - q) < n)
                break;
            if (q >= replace_from && memcmp(q + k, o + k, n - k) == 0) {
                memcpy(q, w, n);
                replace_from = q + n;
            }
            if (q >= count_from && memcmp(q, w, n) == 0) {
                found++;
                count_from = q + n;
            }
            p = q + 1;
        }
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&old);
    PyBuffer_Release(&new);
    return PyLong_FromSsize_t(found);
}

static PyMethodDef methods[] = {
    {"pack", pack, METH_VARARGS,
     "pack(keys, values, soa_defaults) -> (blob, serials)\n\n"
     "The records as one blob in cdb's record layout, and the offsets in it of\n"
     "the serials of the SOA records at indexes soa_defaults."},
    {"scan", scan, METH_VARARGS,
     "scan(blob, serials) -> int\n\n"
     "The number of records in blob; ValueError if it is not whole records or an\n"
     "offset of serials is not the serial of an SOA record."},
    {"write", write_cdb, METH_VARARGS,
     "write(fd, blobs, serials, serial) -> None\n\n"
     "Write to fd the cdb of the records of every blob, in order, with serial at\n"
     "the offsets serials[i] of blobs[i]; all of it without the GIL."},
    {"places", places, METH_VARARGS,
     "places(blob, serial) -> list\n\n"
     "The offsets in blob of the serials of its SOA records whose serial is serial."},
    {"write_pieces", write_pieces, METH_VARARGS,
     "write_pieces(fd, pieces, patches, pairs) -> None\n\n"
     "Write to fd the cdb of the records of every piece (src, offset, length,\n"
     "count, blob, index), in order, with the 4-byte patches (offset, bytes);\n"
     "its (hash, position) pairs to the fd pairs unless it is -1."},
    {"swap", swap, METH_VARARGS,
     "swap(buffer, old, new) -> int\n\n"
     "Every old in the writable buffer replaced in place by new (as long), left to\n"
     "right, not overlapping, as bytes.replace would; the number replaced."},
    {"kick", kick, METH_VARARGS,
     "kick(fd, offset, length) -> None\n\n"
     "Start the disk's writeback of those bytes of fd (a hint: nothing is raised)."},
    {"restamp", restamp, METH_VARARGS,
     "restamp(buffer, old, new) -> int\n\n"
     "swap(buffer, old, new), then how many new the buffer holds (bytes.count's\n"
     "answer), in one pass where old and new share a prefix of 4 bytes or more."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "dnsmaster.core._cdbblob",
    "C fast path of dnsmaster.core.cdb's packed records (optional).", -1, methods, NULL, NULL,
    NULL, NULL,
};

PyMODINIT_FUNC
PyInit__cdbblob(void)
{
    return PyModule_Create(&module);
}
