/* gpuconv's hot CPU kernels in plain C, called through ctypes (which releases the GIL).
 *
 * The same algorithms, in the same order, as the Numba kernels they stand in for
 * (backends/cpu_kernels.py: occupied_rows_*, slice_components; results/box_kernels.py:
 * packed_canonical, yolo_text_into, class_lut_index), so every output is identical; the test
 * suite runs both and compares.  Why: a process that converts a few files spends more time
 * importing Numba and setting up its type system (~0.5 s, ~100 MB) than labelling, and this
 * library loads in a millisecond.  Built on first use by backends/native.py with the system C
 * compiler; without one, the Numba kernels run.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Output arrays live in their own mappings, grown with mremap: the kernel does not know how
 * many components a volume holds, and growing heap blocks with realloc copies them (old and
 * new both resident at the peak: 2.5x the final size).  A 64-byte header keeps the length. */
#define HDR 64

static void *map_alloc(size_t bytes) {
    void *p = mmap(NULL, bytes + HDR, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    *(size_t *)p = bytes + HDR;
    return (char *)p + HDR;
}

static void *map_resize(void *q, size_t bytes) {
    if (!q) return map_alloc(bytes);
    char *p = (char *)q - HDR;
    void *r = mremap(p, *(size_t *)p, bytes + HDR, MREMAP_MAYMOVE);
    if (r == MAP_FAILED) return NULL;
    *(size_t *)r = bytes + HDR;
    return (char *)r + HDR;
}

void gc_free(void *q) {
    if (!q) return;
    char *p = (char *)q - HDR;
    munmap(p, *(size_t *)p);
}

/* ---- row occupancy ------------------------------------------------------------------- */

/* rows: R rows of row_bytes bytes each (any integer type: non-zero iff a byte is non-zero). */
void gc_occupied_rows(const uint8_t *data, int64_t n_rows, int64_t row_bytes, uint8_t *out) {
    int words = (row_bytes % 8 == 0) && (((uintptr_t)data) % 8 == 0);
    for (int64_t r = 0; r < n_rows; r++) {
        const uint8_t *row = data + r * row_bytes;
        uint8_t any = 0;
        if (words) {
            const uint64_t *w = (const uint64_t *)row;
            int64_t n = row_bytes / 8;
            for (int64_t t = 0; t < n; t++) if (w[t]) { any = 1; break; }
        } else {
            for (int64_t t = 0; t < row_bytes; t++) if (row[t]) { any = 1; break; }
        }
        out[r] = any;
    }
}

/* ---- per-slice components -------------------------------------------------------------- */

typedef struct {
    int64_t n, cap;
    int32_t *k, *i0, *i1, *j0, *j1;
    int64_t *val, *px;
} comp_out;

static int grow(comp_out *o) {
    int64_t cap = o->cap < 4096 ? 4096 : o->cap + o->cap / 2;
#define RE(f, T) do { T *p = (T *)map_resize(o->f, (size_t)cap * sizeof(T)); if (!p) return -1; o->f = p; } while (0)
    RE(k, int32_t); RE(i0, int32_t); RE(i1, int32_t); RE(j0, int32_t); RE(j1, int32_t);
    RE(val, int64_t); RE(px, int64_t);
#undef RE
    o->cap = cap;
    return 0;
}

static inline int32_t find_root(int32_t *parent, int32_t x) {
    int32_t root = x;
    while (parent[root] != root) root = parent[root];
    while (parent[x] != root) { int32_t nxt = parent[x]; parent[x] = root; x = nxt; }
    return root;
}

static inline void unite(int32_t *parent, int32_t a, int32_t b) {
    int32_t ra = find_root(parent, a), rb = find_root(parent, b);
    if (ra < rb) parent[rb] = ra;
    else if (rb < ra) parent[ra] = rb;
}

/* One body per value type: T is the unsigned type of a pixel. */
#define SLICE_COMPONENTS(NAME, T)                                                              \
static int NAME(const T *v, const uint8_t *occ, int64_t K, int64_t J, int64_t I, int diagonal,  \
                comp_out *o) {                                                                 \
    int64_t max_runs = J * I;                                                                  \
    int32_t *r_start = malloc(max_runs * 4), *r_stop = malloc(max_runs * 4);                   \
    int32_t *r_row = malloc(max_runs * 4), *parent = malloc(max_runs * 4);                     \
    int32_t *slot = malloc(max_runs * 4);                                                      \
    T *r_val = malloc(max_runs * sizeof(T));                                                   \
    int rc = 0;                                                                                \
    int reach = diagonal ? 1 : 0;                                                              \
    int words = ((I * (int64_t)sizeof(T)) % 8 == 0) && (((uintptr_t)v) % 8 == 0);             \
    int64_t per_word = 8 / (int64_t)sizeof(T);                                                 \
    int64_t n_words = (I * (int64_t)sizeof(T)) / 8;                                            \
    if (!r_start || !r_stop || !r_row || !parent || !slot || !r_val) { rc = -1; goto done; }   \
    for (int64_t k = 0; k < K; k++) {                                                          \
        int64_t n_runs = 0, prev_first = 0, prev_end = 0, prev_row = -2;                       \
        for (int64_t j = 0; j < J; j++) {                                                      \
            if (!occ[k * J + j]) continue;                                                     \
            const T *row = v + (k * J + j) * I;                                                \
            int64_t row_first = n_runs;                                                        \
            int64_t w = 0;                                                                     \
            for (;;) {                                                                         \
                int64_t start, stop;                                                           \
                if (words) {                                                                   \
                    const uint64_t *rw = (const uint64_t *)row;                                \
                    while (w < n_words && rw[w] == 0) w++;                                     \
                    if (w == n_words) break;                                                   \
                    start = w * per_word;                                                      \
                    while (w < n_words && rw[w] != 0) w++;                                     \
                    stop = w * per_word;                                                       \
                } else {                                                                       \
                    if (w == 1) break;                                                         \
                    start = 0; stop = I; w = 1;                                                \
                }                                                                              \
                for (int64_t i = start; i < stop; i++) {                                       \
                    T x = row[i];                                                              \
                    if (x == 0) continue;                                                      \
                    if (n_runs > row_first && r_stop[n_runs - 1] == i - 1 &&                   \
                        r_val[n_runs - 1] == x) {                                              \
                        r_stop[n_runs - 1] = (int32_t)i;                                       \
                    } else {                                                                   \
                        r_start[n_runs] = (int32_t)i; r_stop[n_runs] = (int32_t)i;             \
                        r_row[n_runs] = (int32_t)j; r_val[n_runs] = x;                         \
                        parent[n_runs] = (int32_t)n_runs; n_runs++;                            \
                    }                                                                          \
                }                                                                              \
            }                                                                                  \
            if (prev_row == j - 1) {                                                           \
                int64_t q = prev_first;                                                        \
                for (int64_t r = row_first; r < n_runs; r++) {                                 \
                    int64_t lo = r_start[r] - reach, hi = r_stop[r] + reach;                   \
                    while (q < prev_end && r_stop[q] < lo) q++;                                \
                    for (int64_t t = q; t < prev_end && r_start[t] <= hi; t++)                 \
                        if (r_val[t] == r_val[r]) unite(parent, (int32_t)r, (int32_t)t);      \
                }                                                                              \
            }                                                                                  \
            prev_first = row_first; prev_end = n_runs; prev_row = j;                           \
        }                                                                                      \
        if (n_runs == 0) continue;                                                             \
        for (int64_t r = 0; r < n_runs; r++) slot[r] = -1;                                     \
        for (int64_t r = 0; r < n_runs; r++) {                                                 \
            int32_t root = find_root(parent, (int32_t)r);                                      \
            int64_t s = slot[root];                                                            \
            if (s < 0) {                                                                       \
                s = o->n;                                                                      \
                slot[root] = (int32_t)s;                                                       \
                if (o->n == o->cap && grow(o)) { rc = -1; goto done; }                         \
                o->n++;                                                                        \
                o->k[s] = (int32_t)k; o->val[s] = (int64_t)r_val[r];                           \
                o->i0[s] = r_start[r]; o->i1[s] = r_stop[r];                                   \
                o->j0[s] = r_row[r]; o->j1[s] = r_row[r]; o->px[s] = 0;                        \
            }                                                                                  \
            if (r_start[r] < o->i0[s]) o->i0[s] = r_start[r];                                  \
            if (r_stop[r] > o->i1[s]) o->i1[s] = r_stop[r];                                    \
            if (r_row[r] > o->j1[s]) o->j1[s] = r_row[r];                                      \
            o->px[s] += r_stop[r] - r_start[r] + 1;                                            \
        }                                                                                      \
    }                                                                                          \
done:                                                                                          \
    free(r_start); free(r_stop); free(r_row); free(parent); free(slot); free(r_val);           \
    return rc;                                                                                 \
}

SLICE_COMPONENTS(sc_u8, uint8_t)
SLICE_COMPONENTS(sc_u16, uint16_t)
SLICE_COMPONENTS(sc_u32, uint32_t)
SLICE_COMPONENTS(sc_u64, uint64_t)

/* Components of a C-contiguous (K, J, I) volume of itemsize-byte unsigned values.  On success
 * returns the count and fills ptrs[0..6] with malloc'd arrays (k, val, i0, i1, j0, j1, px),
 * shrunk to size (own mappings); the caller frees them with gc_free.  Returns -1 when out of memory. */
int64_t gc_slice_components(const void *v, const uint8_t *occ, int64_t K, int64_t J, int64_t I,
                            int64_t itemsize, int32_t diagonal, void **ptrs) {
    comp_out o;
    memset(&o, 0, sizeof o);
    int rc;
    switch (itemsize) {
    case 1: rc = sc_u8((const uint8_t *)v, occ, K, J, I, diagonal, &o); break;
    case 2: rc = sc_u16((const uint16_t *)v, occ, K, J, I, diagonal, &o); break;
    case 4: rc = sc_u32((const uint32_t *)v, occ, K, J, I, diagonal, &o); break;
    case 8: rc = sc_u64((const uint64_t *)v, occ, K, J, I, diagonal, &o); break;
    default: rc = -1;
    }
    if (rc == 0 && o.n == 0) grow(&o);  /* never hand back NULL */
    if (rc != 0) {
        gc_free(o.k); gc_free(o.val); gc_free(o.i0); gc_free(o.i1); gc_free(o.j0);
        gc_free(o.j1); gc_free(o.px);
        return -1;
    }
    int64_t n = o.n ? o.n : 1;
#define SHRINK(f, T) do { T *p = (T *)map_resize(o.f, (size_t)n * sizeof(T)); if (p) o.f = p; } while (0)
    SHRINK(k, int32_t); SHRINK(val, int64_t); SHRINK(i0, int32_t); SHRINK(i1, int32_t);
    SHRINK(j0, int32_t); SHRINK(j1, int32_t); SHRINK(px, int64_t);
#undef SHRINK
    ptrs[0] = o.k; ptrs[1] = o.val; ptrs[2] = o.i0; ptrs[3] = o.i1;
    ptrs[4] = o.j0; ptrs[5] = o.j1; ptrs[6] = o.px;
    return o.n;
}


/* ---- canonical order ------------------------------------------------------------------- */

static void sort_u64(uint64_t *a, int64_t n) {
    /* Hoare quicksort (median of three), insertion sort below 17 keys */
    while (n > 16) {
        uint64_t x = a[0], y = a[n / 2], z = a[n - 1];
        uint64_t p = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        int64_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] < p) i++;
            while (a[j] > p) j--;
            if (i >= j) break;
            uint64_t t = a[i]; a[i] = a[j]; a[j] = t;
            i++; j--;
        }
        /* [0, j] <= p <= [j + 1, n): recurse on the smaller part */
        int64_t left = j + 1;
        if (left <= 0 || left >= n) break;   /* cannot happen with a median pivot; be safe */
        if (left < n - left) { sort_u64(a, left); a += left; n -= left; }
        else { sort_u64(a + left, n - left); n = left; }
    }
    for (int64_t i = 1; i < n; i++) {
        uint64_t x = a[i];
        int64_t j = i - 1;
        while (j >= 0 && a[j] > x) { a[j + 1] = a[j]; j--; }
        a[j + 1] = x;
    }
}

/* See box_kernels.packed_canonical.  Output arrays have n entries each.  Returns 0, or -1
 * when out of memory. */
int32_t gc_packed_canonical(int64_t n, const int32_t *k, const int32_t *cls, const int32_t *i0,
                            const int32_t *i1, const int32_t *j0, const int32_t *j1,
                            const int64_t *px, int64_t n_slices, int64_t bj, int64_t bi,
                            int64_t bp, int32_t *ok, int32_t *ocls, int32_t *oi0, int32_t *oi1,
                            int32_t *oj0, int32_t *oj1, int64_t *opx) {
    int64_t *counts = calloc((size_t)n_slices + 1, sizeof(int64_t));
    int64_t *fill = malloc(((size_t)n_slices + 1) * sizeof(int64_t));
    uint64_t *keys = malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    if (!counts || !fill || !keys) { free(counts); free(fill); free(keys); return -1; }
    for (int64_t r = 0; r < n; r++) counts[k[r] + 1]++;
    for (int64_t s = 0; s < n_slices; s++) counts[s + 1] += counts[s];
    memcpy(fill, counts, (size_t)n_slices * sizeof(int64_t));
    int64_t sj1 = bi + bp, si0 = bj + sj1, sj0 = bi + si0, sc = bj + sj0;
    for (int64_t r = 0; r < n; r++) {
        uint64_t key = ((uint64_t)cls[r] << sc) | ((uint64_t)j0[r] << sj0)
                     | ((uint64_t)i0[r] << si0) | ((uint64_t)j1[r] << sj1)
                     | ((uint64_t)i1[r] << bp) | (uint64_t)px[r];
        keys[fill[k[r]]++] = key;
    }
    uint64_t mj = (1ULL << bj) - 1, mi = (1ULL << bi) - 1;
    uint64_t mp = bp >= 64 ? ~0ULL : (1ULL << bp) - 1;
    for (int64_t s = 0; s < n_slices; s++) {
        int64_t a = counts[s], b = counts[s + 1];
        if (b - a > 1) sort_u64(keys + a, b - a);
        for (int64_t r = a; r < b; r++) {
            uint64_t key = keys[r];
            ok[r] = (int32_t)s;
            ocls[r] = sc >= 64 ? 0 : (int32_t)(key >> sc);
            oj0[r] = (int32_t)((key >> sj0) & mj);
            oi0[r] = (int32_t)((key >> si0) & mi);
            oj1[r] = (int32_t)((key >> sj1) & mj);
            oi1[r] = (int32_t)((key >> bp) & mi);
            opx[r] = (int64_t)(key & mp);
        }
    }
    free(counts); free(fill); free(keys);
    return 0;
}

/* ---- YOLO text --------------------------------------------------------------------------- */

static inline int64_t digits(int64_t c) {
    int64_t d = 1;
    while (c >= 10) { c /= 10; d++; }
    return d;
}

/* starts: n + 1 entries filled; returns the text length (call gc_yolo_fill next). */
int64_t gc_yolo_starts(int64_t n, const int32_t *cls, int64_t *starts) {
    int64_t total = 0;
    for (int64_t r = 0; r < n; r++) { starts[r] = total; total += digits(cls[r]) + 37; }
    starts[n] = total;
    return total;
}

void gc_yolo_fill(int64_t n, const int32_t *cls, const int32_t *i0, const int32_t *i1,
                  const int32_t *j0, const int32_t *j1, const uint8_t *lut_x,
                  const uint8_t *lut_y, const uint8_t *lut_w, const uint8_t *lut_h,
                  const int64_t *starts, uint8_t *buf) {
    for (int64_t r = 0; r < n; r++) {
        uint8_t *p = buf + starts[r];
        uint8_t *end = buf + starts[r + 1] - 37;
        int64_t c = cls[r];
        for (uint8_t *q = end - 1; q >= p; q--) { *q = (uint8_t)('0' + c % 10); c /= 10; }
        p = end;
        p[0] = ' ';  memcpy(p + 1, lut_x + 8 * (int64_t)(i0[r] + i1[r] + 1), 8);
        p[9] = ' ';  memcpy(p + 10, lut_y + 8 * (int64_t)(j0[r] + j1[r] + 1), 8);
        p[18] = ' '; memcpy(p + 19, lut_w + 8 * (int64_t)(i1[r] - i0[r] + 1), 8);
        p[27] = ' '; memcpy(p + 28, lut_h + 8 * (int64_t)(j1[r] - j0[r] + 1), 8);
        p[36] = '\n';
    }
}

/* ---- class lookup ------------------------------------------------------------------------ */

void gc_class_lut_index(int64_t n, const int64_t *value, int64_t vmin, uint8_t *present,
                        int64_t *idx) {
    for (int64_t r = 0; r < n; r++) { int64_t v = value[r] - vmin; idx[r] = v; present[v] = 1; }
}

/* ---- which values occur ------------------------------------------------------------------ */

/* seen[v] = 1 for every value v of n items of itemsize 1 or 2 (seen has 256 or 65536 bytes). */
void gc_seen_values(const void *data, int64_t n, int64_t itemsize, uint8_t *seen) {
    if (itemsize == 1) {
        const uint8_t *d = (const uint8_t *)data;
        for (int64_t r = 0; r < n; r++) seen[d[r]] = 1;
    } else {
        const uint16_t *d = (const uint16_t *)data;
        for (int64_t r = 0; r < n; r++) seen[d[r]] = 1;
    }
}
