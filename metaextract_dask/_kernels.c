/* One-pass statistics of a float32 block with AVX2: counts, bins, min/max and shifted sums in ONE loop.
 *
 * The numba kernels in stats.py need three passes per slice (bins, sums, counter updates) because LLVM
 * vectorises no loop that updates histogram counters. Here the vector work of eight elements and the four
 * counter updates of their bins share one loop, so the out-of-order core overlaps the arithmetic with the
 * stores. Semantics are those of stats._float_partial exactly (same bin arithmetic in float32, same bins
 * for below/above/fill/NaN/inf, pairs of bins per counter update); stats.py falls back to numba where this
 * module is missing (no compiler at install time) or the CPU has no AVX2.
 *
 * f32_block(x, lo, hi, scale, top, nb, fill, c, counts) -> (s1, s2, min, max)
 *   x      : C-contiguous float32 buffer (read only)
 *   lo, hi : histogram range, already rounded inwards to float32 (stats._f32_range)
 *   scale  : bins / (hi - lo) in float32;  top: bins - 1
 *   nb     : bins
 *   fill   : fill value (float32-representable) or None
 *   c      : shift for the sums (a data value)
 *   counts : writable int64 buffer of nb + 6 totals; added to
 *   returns sums of (x - c) and (x - c)**2 over valid elements (float64), and their min and max.
 * Returns None (nothing done) when the CPU lacks AVX2/FMA.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

typedef struct {
    double s1, s2;
    float mn, mx;
} result_t;

/* Scalar bin of one element: the reference the vector code follows. */
static inline int32_t bin_one(float v, float lo, float hi, float scale, float top, int32_t nb, int has_fill,
                              float fill) {
    int32_t b;
    if (isnan(v)) return nb + 3;
    if (isinf(v)) return nb + 4;
    if (has_fill && v == fill) return nb + 2;
    if (v < lo) return nb;
    if (v > hi) return nb + 1;
    float t = (v - lo) * scale;
    t = t > 0.0f ? t : 0.0f;
    t = t < top ? t : top;
    b = (int32_t)t;
    return b;
}

static void fold(int32_t *tables, int32_t NB, int64_t *counts) {
    for (int k = 0; k < 4; k++) {
        int32_t *t = tables + (size_t)k * NB * NB;
        for (int32_t a = 0; a < NB; a++)
            for (int32_t b = 0; b < NB; b++) {
                int32_t v = t[a * NB + b];
                if (v) {
                    counts[a] += v;
                    counts[b] += v;
                }
            }
    }
    memset(tables, 0, sizeof(int32_t) * 4 * (size_t)NB * NB);
}

#if HAVE_X86
__attribute__((target("avx2,fma"))) static void f32_avx2(const float *x, int64_t n, float lo, float hi, float scale,
                                                          float top, int32_t nb, int has_fill, float fill, double c,
                                                          int32_t *tables, int64_t *counts, result_t *r) {
    const int32_t NB = nb + 6, none = nb + 5;
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi), vscale = _mm256_set1_ps(scale);
    const __m256 vtop = _mm256_set1_ps(top), vzero = _mm256_setzero_ps(), vfill = _mm256_set1_ps(fill);
    const __m256 vinf = _mm256_set1_ps(INFINITY), vninf = _mm256_set1_ps(-INFINITY);
    (void)vninf;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i b_under = _mm256_set1_epi32(nb), b_over = _mm256_set1_epi32(nb + 1);
    const __m256i b_fill = _mm256_set1_epi32(nb + 2), b_nan = _mm256_set1_epi32(nb + 3);
    const __m256i b_inf = _mm256_set1_epi32(nb + 4), vNB = _mm256_set1_epi32(NB);
    const __m256d vc = _mm256_set1_pd(c);
    __m256d s1a = _mm256_setzero_pd(), s1b = _mm256_setzero_pd(), s2a = _mm256_setzero_pd(), s2b = _mm256_setzero_pd();
    __m256 mn = vinf, mx = vninf;
    int32_t *t0 = tables, *t1 = tables + (size_t)NB * NB, *t2 = t1 + (size_t)NB * NB, *t3 = t2 + (size_t)NB * NB;
    int64_t since_fold = 0;
    int64_t i = 0;
    const __m256 vc32 = _mm256_set1_ps((float)c); /* c is a data value: exact in float32 */
    int64_t idx[4];
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        /* NaN and +-inf in one test: |v| not less than inf (unordered counts as true) */
        __m256 bad = _mm256_cmp_ps(_mm256_and_ps(v, absmask), vinf, _CMP_NLT_UQ);
        __m256 excl = bad;
        __m256 isfill = vzero;
        if (has_fill) {
            isfill = _mm256_cmp_ps(v, vfill, _CMP_EQ_OQ);
            excl = _mm256_or_ps(bad, isfill);
        }
        /* bins: (v - lo) * scale clamped to [0, top], truncated; then the special bins by priority */
        __m256 t = _mm256_mul_ps(_mm256_sub_ps(v, vlo), vscale);
        t = _mm256_min_ps(_mm256_max_ps(t, vzero), vtop); /* NaN lanes get 0 (maxps returns the 2nd operand) */
        __m256 bf = _mm256_castsi256_ps(_mm256_cvttps_epi32(t));
        bf = _mm256_blendv_ps(bf, _mm256_castsi256_ps(b_under), _mm256_cmp_ps(v, vlo, _CMP_LT_OQ));
        bf = _mm256_blendv_ps(bf, _mm256_castsi256_ps(b_over), _mm256_cmp_ps(v, vhi, _CMP_GT_OQ));
        if (has_fill) bf = _mm256_blendv_ps(bf, _mm256_castsi256_ps(b_fill), isfill);
        bf = _mm256_blendv_ps(bf, _mm256_castsi256_ps(b_inf), bad);
        bf = _mm256_blendv_ps(bf, _mm256_castsi256_ps(b_nan), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        __m256i b = _mm256_castps_si256(bf);
        /* pairs of neighbours: even * NB + odd, in the low half of each 64-bit lane */
        _mm256_storeu_si256((__m256i *)idx, _mm256_add_epi64(_mm256_mul_epu32(b, vNB), _mm256_srli_epi64(b, 32)));
        t0[(int32_t)idx[0]]++;
        t1[(int32_t)idx[1]]++;
        t2[(int32_t)idx[2]]++;
        t3[(int32_t)idx[3]]++;
        /* excluded lanes take the value c: a valid value, so neutral for min/max, and exactly 0 in the sums */
        __m256 vz = _mm256_blendv_ps(v, vc32, excl);
        mn = _mm256_min_ps(mn, vz);
        mx = _mm256_max_ps(mx, vz);
        __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(vz)), vc);
        __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(vz, 1)), vc);
        s1a = _mm256_add_pd(s1a, d0);
        s1b = _mm256_add_pd(s1b, d1);
        s2a = _mm256_fmadd_pd(d0, d0, s2a);
        s2b = _mm256_fmadd_pd(d1, d1, s2b);
        since_fold += 8;
        if (since_fold >= (1LL << 30)) { /* int32 counters: fold long before they could overflow */
            fold(tables, NB, counts);
            since_fold = 0;
        }
    }
    double a[4], q[4];
    _mm256_storeu_pd(a, _mm256_add_pd(s1a, s1b));
    _mm256_storeu_pd(q, _mm256_add_pd(s2a, s2b));
    double s1 = (a[0] + a[1]) + (a[2] + a[3]), s2 = (q[0] + q[1]) + (q[2] + q[3]);
    float lo8[8], hi8[8];
    _mm256_storeu_ps(lo8, mn);
    _mm256_storeu_ps(hi8, mx);
    float fmn = INFINITY, fmx = -INFINITY;
    for (int k = 0; k < 8; k++) {
        fmn = lo8[k] < fmn ? lo8[k] : fmn;
        fmx = hi8[k] > fmx ? hi8[k] : fmx;
    }
    for (; i < n; i++) { /* the tail, one element at a time, paired with "none" */
        float v = x[i];
        int32_t b = bin_one(v, lo, hi, scale, top, nb, has_fill, fill);
        t0[b * NB + none]++;
        if (b < nb + 2) {
            double d = (double)v - c;
            s1 += d;
            s2 += d * d;
            fmn = v < fmn ? v : fmn;
            fmx = v > fmx ? v : fmx;
        }
    }
    fold(tables, NB, counts);
    r->s1 = s1;
    r->s2 = s2;
    r->mn = fmn;
    r->mx = fmx;
}
#endif

static int have_avx2(void) {
#if HAVE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static PyObject *f32_block(PyObject *self, PyObject *args) {
    Py_buffer xb, cb;
    double lo, hi, scale, top, c;
    int nb;
    PyObject *fillobj;
    if (!PyArg_ParseTuple(args, "y*ddddiOdw*", &xb, &lo, &hi, &scale, &top, &nb, &fillobj, &c, &cb)) return NULL;
    PyObject *out = NULL;
    int has_fill = fillobj != Py_None;
    double fill = 0.0;
    if (has_fill) {
        fill = PyFloat_AsDouble(fillobj);
        if (fill == -1.0 && PyErr_Occurred()) goto done;
    }
    if (nb < 1 || cb.len != (Py_ssize_t)sizeof(int64_t) * (nb + 6) || xb.len % sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "f32_block: bad buffer sizes");
        goto done;
    }
    if (!have_avx2()) {
        Py_INCREF(Py_None);
        out = Py_None;
        goto done;
    }
#if HAVE_X86
    {
        int32_t NB = nb + 6;
        int32_t *tables = calloc(4 * (size_t)NB * NB, sizeof(int32_t));
        if (!tables) {
            PyErr_NoMemory();
            goto done;
        }
        result_t r;
        Py_BEGIN_ALLOW_THREADS
        f32_avx2((const float *)xb.buf, (int64_t)(xb.len / sizeof(float)), (float)lo, (float)hi, (float)scale,
                 (float)top, nb, has_fill, (float)fill, c, tables, (int64_t *)cb.buf, &r);
        Py_END_ALLOW_THREADS
        free(tables);
        out = Py_BuildValue("dddd", r.s1, r.s2, (double)r.mn, (double)r.mx);
    }
#endif
done:
    PyBuffer_Release(&xb);
    PyBuffer_Release(&cb);
    return out;
}


/* ---------------------------------------------------------------------------------------------------------
 * The one-pass kernel of every numeric dtype: counts, min/max, shifted sums, the histogram over a known range
 * and the distribution sketch, in one loop (stats._c_partial).
 *
 * The sketch key of a finite value v (as a double; every int/float dtype converts to double with IEEE
 * round-to-nearest, exactly for float16/32 and integers up to 2**53): 0 for +-0; else, with |v| = 2**e * 1.f
 * (subnormals normalised by their leading bit), key = (e + 1075) * 128 + (top 7 bits of f), negated for
 * negative v. Keys are monotone in v, a bucket spans a relative width of 2**-7, and the key is a function of
 * the double's bits alone (integer arithmetic), so the CUDA kernel (_cuda.py, sketch_key) and the numpy
 * reference (sketch.keys_of) give the same key for the same value. |key| <= KMAX.
 * ------------------------------------------------------------------------------------------------------- */
#define SK_BITS 7
#define KMAX ((2098 << SK_BITS) + (1 << SK_BITS) - 1)
#define KOFF KMAX
#define KLANES 8
#define KTRASH (2 * KMAX + 1) /* the counter slot of excluded lanes in the vector kernels */

static int have_avx2(void);

static inline int32_t sketch_key(double v) {
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    uint64_t a = b & 0x7fffffffffffffffULL;
    int32_t k;
    if (a >= 0x0010000000000000ULL) { /* normal: the exponent field and the top mantissa bits, shifted */
        k = (int32_t)(a >> (52 - SK_BITS)) + (52 << SK_BITS);
    } else if (a == 0) {
        return 0;
    } else { /* subnormal: leading bit p (0..51) is the exponent p - 1074, i.e. a virtual field p - 51 */
        int p = 63 - __builtin_clzll(a);
        uint64_t f = (a << (52 - p)) & 0x000fffffffffffffULL;
        k = ((p + 1) << SK_BITS) | (int32_t)(f >> (52 - SK_BITS));
    }
    int32_t sg = -(int32_t)(b >> 63); /* 0 or -1: the sign without a branch (random signs mispredict) */
    return (k ^ sg) - sg;
}

/* Per-thread sketch counters: KLANES interleaved counters per key (element i counts in lane i % 4, so runs of
 * one key do not wait on one counter's store), kept zeroed between calls; only the key range of the block's
 * min..max is read back and cleared. */
static __thread uint32_t *sk_table = NULL;

static uint32_t *sketch_table(void) {
    if (!sk_table) sk_table = calloc((size_t)(2 * KMAX + 2) * KLANES, sizeof(uint32_t));
    return sk_table;
}

typedef struct {
    int64_t nnan, ninf, nfill, nvalid;
    double s1, s2, mn, mx;
} gen_result_t;

typedef struct {
    int has_fill, has_rng, nb;
    double fill, c, lo, hi, scale, top;
    float lo32, hi32, scale32, top32;
} gen_args_t;

/* The bin of a valid value, as stats._bin: float32 data in float32 arithmetic, everything else in float64. */
static inline int32_t bin_f32(float v, float lo, float hi, float scale, float top, int32_t nb) {
    if (v < lo) return nb;
    if (v > hi) return nb + 1;
    float t = (v - lo) * scale;
    t = t > 0.0f ? t : 0.0f;
    return (int32_t)(t < top ? t : top);
}

static inline int32_t bin_f64(double d, double lo, double hi, double scale, double top, int32_t nb) {
    if (d < lo) return nb;
    if (d > hi) return nb + 1;
    double t = (d - lo) * scale;
    t = t > 0.0 ? t : 0.0;
    return (int32_t)(t < top ? t : top);
}

#define BIN_F32(v) bin_f32((v), lo32, hi32, scale32, top32, nb)
#define BIN_F64(d) bin_f64((d), lo, hi, scale, top, nb)

/* One element, without branches on the data (random signs, NaNs or fills would mispredict): excluded elements
 * take the value c and count in trash slots (KTRASH of the sketch, nb + 5 of the histogram). */
#define GEN_ELEMENT(T, ISFLOAT, BINEXPR, l)                                                                  \
    {                                                                                                        \
        T v = x[i + (l)];                                                                                    \
        double d = (double)v;                                                                                \
        int fin = ISFLOAT ? isfinite(d) : 1;                                                                 \
        int isf = has_fill && v == fillT;                                                                    \
        int ok = fin & !isf;                                                                                 \
        if (ISFLOAT) nnan += isnan(d) != 0;                                                                  \
        nfill += fin & isf;                                                                                  \
        double dv = ok ? d : c;                                                                              \
        mn[l] = dv < mn[l] ? dv : mn[l];                                                                     \
        mx[l] = dv > mx[l] ? dv : mx[l];                                                                     \
        double dd = dv - c;                                                                                  \
        s1[l] += dd;                                                                                         \
        s2[l] += dd * dd;                                                                                    \
        tbl[(size_t)(ok ? sketch_key(dv) + KOFF : KTRASH) * KLANES + (l)]++;                                 \
        if (has_rng) counts[ok ? BINEXPR : nb + 5]++;                                                        \
        nvalid += ok;                                                                                        \
    }

/* The scalar kernel of one dtype: per element in lane i % KLANES (own sums, extremes and sketch counters). */
#define GEN_KERNEL(NAME, T, ISFLOAT, BINEXPR)                                                                   \
    static void NAME(const T *x, int64_t n, const gen_args_t *a, int64_t *counts, uint32_t *tbl,             \
                     gen_result_t *r) {                                                                       \
        const int32_t nb = a->nb, has_fill = a->has_fill, has_rng = a->has_rng;                              \
        const double lo = a->lo, hi = a->hi, scale = a->scale, top = a->top;                                 \
        const float lo32 = a->lo32, hi32 = a->hi32, scale32 = a->scale32, top32 = a->top32;                  \
        const T fillT = (T)a->fill;                                                                          \
        const double c = a->c;                                                                               \
        (void)lo; (void)hi; (void)scale; (void)top; (void)lo32; (void)hi32; (void)scale32; (void)top32;      \
        double s1[KLANES] = {0}, s2[KLANES] = {0}, mn[KLANES], mx[KLANES];                                   \
        int64_t nnan = 0, nfill = 0, nvalid = 0, i = 0;                                                      \
        for (int l = 0; l < KLANES; l++) { mn[l] = c; mx[l] = c; } /* c is a valid value (or none is) */     \
        for (; i + KLANES <= n; i += KLANES)                                                                 \
            for (int l = 0; l < KLANES; l++) GEN_ELEMENT(T, ISFLOAT, BINEXPR, l)                             \
        for (int l = 0; i + l < n; l++) GEN_ELEMENT(T, ISFLOAT, BINEXPR, l)                                  \
        r->nnan = nnan; r->ninf = n - nvalid - nfill - nnan; r->nfill = nfill; r->nvalid = nvalid;           \
        r->s1 = r->s2 = 0.0;                                                                                 \
        r->mn = INFINITY;                                                                                    \
        r->mx = -INFINITY;                                                                                   \
        for (int l = 0; l < KLANES; l++) {                                                                   \
            r->s1 += s1[l];                                                                                  \
            r->s2 += s2[l];                                                                                  \
            r->mn = fmin(r->mn, mn[l]);                                                                      \
            r->mx = fmax(r->mx, mx[l]);                                                                      \
        }                                                                                                    \
    }

GEN_KERNEL(gen_f64, double, 1, BIN_F64(d))
GEN_KERNEL(gen_f32, float, 1, BIN_F32(v))
GEN_KERNEL(gen_i8, int8_t, 0, BIN_F64(d))
GEN_KERNEL(gen_u8, uint8_t, 0, BIN_F64(d))
GEN_KERNEL(gen_i16, int16_t, 0, BIN_F64(d))
GEN_KERNEL(gen_u16, uint16_t, 0, BIN_F64(d))
GEN_KERNEL(gen_i32, int32_t, 0, BIN_F64(d))
GEN_KERNEL(gen_u32, uint32_t, 0, BIN_F64(d))
GEN_KERNEL(gen_i64, int64_t, 0, BIN_F64(d))
GEN_KERNEL(gen_u64, uint64_t, 0, BIN_F64(d))

#if HAVE_X86
/* The vector kernel of float64 data (and float32, converted to float64 four lanes at a time) without a
 * histogram: the same results as the scalar kernel (same keys, counts and extremes; sums to rounding). Lane l
 * of vector u of an iteration counts in sketch lane 4u + l; excluded elements (NaN, inf, fill) count in the
 * KTRASH slot and take the value c (neutral for min/max, exactly 0 in the sums); subnormals, rare, get their
 * keys from the scalar function. */
typedef struct {
    __m256d s1, s2, mn, mx;
    int64_t nnan, ninf, nfill;
} vstate_t;

__attribute__((target("avx2,fma"), always_inline)) static inline void vec4(__m256d v, int u, vstate_t *st,
                                                                             int has_fill, __m256d vfill,
                                                                             __m256d vc, uint32_t *tbl,
                                                                             const int32_t *bins, uint32_t *htbl,
                                                                             int32_t nb) {
    const __m256i absm = _mm256_set1_epi64x(0x7fffffffffffffffLL);
    const __m256i infb = _mm256_set1_epi64x(0x7ff0000000000000LL);
    const __m256i normb = _mm256_set1_epi64x(0x0010000000000000LL);
    const __m256i kbias = _mm256_set1_epi64x(52 << SK_BITS);
    const __m256i zero = _mm256_setzero_si256();
    __m256i b = _mm256_castpd_si256(v);
    __m256i a = _mm256_and_si256(b, absm);
    __m256i valid = _mm256_cmpgt_epi64(infb, a); /* finite: |bits| below those of inf */
    if (has_fill) valid = _mm256_andnot_si256(_mm256_castpd_si256(_mm256_cmp_pd(v, vfill, _CMP_EQ_OQ)), valid);
    int vm = _mm256_movemask_pd(_mm256_castsi256_pd(valid));
    __m256d vz = _mm256_blendv_pd(vc, v, _mm256_castsi256_pd(valid));
    st->mn = _mm256_min_pd(st->mn, vz);
    st->mx = _mm256_max_pd(st->mx, vz);
    __m256d d = _mm256_sub_pd(vz, vc);
    st->s1 = _mm256_add_pd(st->s1, d);
    st->s2 = _mm256_fmadd_pd(d, d, st->s2);
    /* keys of normal values: exponent and top mantissa bits; zeros 0; negatives mirrored */
    __m256i k = _mm256_add_epi64(_mm256_srli_epi64(a, 52 - SK_BITS), kbias);
    k = _mm256_andnot_si256(_mm256_cmpeq_epi64(a, zero), k);
    __m256i neg = _mm256_cmpgt_epi64(zero, b);
    k = _mm256_blendv_epi8(k, _mm256_sub_epi64(zero, k), neg);
    __m256i idx = _mm256_add_epi64(k, _mm256_set1_epi64x(KOFF));
    idx = _mm256_blendv_epi8(_mm256_set1_epi64x(KTRASH), idx, valid);
    /* counter offsets: key slot * KLANES + lane (4u + l); the shift by 3 is KLANES == 8 */
    idx = _mm256_add_epi64(_mm256_slli_epi64(idx, 3), _mm256_setr_epi64x(4 * u, 4 * u + 1, 4 * u + 2, 4 * u + 3));
    int64_t ix[4];
    _mm256_storeu_si256((__m256i *)ix, idx);
    int sub = _mm256_movemask_pd(_mm256_castsi256_pd(
        _mm256_andnot_si256(_mm256_cmpeq_epi64(a, zero), _mm256_cmpgt_epi64(normb, a))));
    if (sub) { /* subnormal lanes (valid by construction) */
        double vv[4];
        _mm256_storeu_pd(vv, v);
        for (int l = 0; l < 4; l++)
            if (sub >> l & 1) ix[l] = (int64_t)(sketch_key(vv[l]) + KOFF) * KLANES + 4 * u + l;
    }
    tbl[ix[0]]++;
    tbl[ix[1]]++;
    tbl[ix[2]]++;
    tbl[ix[3]]++;
    if (bins) { /* the histogram: bins of the valid lanes, the trash bin nb + 5 for the others; offsets as above */
        const __m256i low = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
        __m128i v32 = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(valid, low));
        __m128i hb = _mm_blendv_epi8(_mm_set1_epi32(nb + 5), _mm_loadu_si128((const __m128i *)bins), v32);
        hb = _mm_add_epi32(_mm_slli_epi32(hb, 3), _mm_setr_epi32(4 * u, 4 * u + 1, 4 * u + 2, 4 * u + 3));
        htbl[_mm_extract_epi32(hb, 0)]++;
        htbl[_mm_extract_epi32(hb, 1)]++;
        htbl[_mm_extract_epi32(hb, 2)]++;
        htbl[_mm_extract_epi32(hb, 3)]++;
    }
    if (vm != 0xf) { /* excluded lanes: which kind */
        double vv[4];
        _mm256_storeu_pd(vv, v);
        for (int l = 0; l < 4; l++) {
            if (vm >> l & 1) continue;
            if (isnan(vv[l])) st->nnan++;
            else if (isinf(vv[l])) st->ninf++;
            else st->nfill++;
        }
    }
}

__attribute__((target("avx2,fma"))) static void vfinish(vstate_t *st, gen_result_t *r, int64_t n) {
    double a[4], q[4], lo[4], hi[4];
    _mm256_storeu_pd(a, st->s1);
    _mm256_storeu_pd(q, st->s2);
    _mm256_storeu_pd(lo, st->mn);
    _mm256_storeu_pd(hi, st->mx);
    r->s1 = (a[0] + a[1]) + (a[2] + a[3]);
    r->s2 = (q[0] + q[1]) + (q[2] + q[3]);
    r->mn = fmin(fmin(lo[0], lo[1]), fmin(lo[2], lo[3]));
    r->mx = fmax(fmax(hi[0], hi[1]), fmax(hi[2], hi[3]));
    r->nnan = st->nnan;
    r->ninf = st->ninf;
    r->nfill = st->nfill;
    r->nvalid = n - st->nnan - st->ninf - st->nfill;
}

/* Bins of four doubles in float64 arithmetic (stats._bin): below nb, above nb + 1, else the truncated
 * clamped (d - lo) * scale. */
__attribute__((target("avx2,fma"))) static inline void bins_f64(__m256d v, const gen_args_t *a, int32_t *out) {
    __m256d t = _mm256_mul_pd(_mm256_sub_pd(v, _mm256_set1_pd(a->lo)), _mm256_set1_pd(a->scale));
    t = _mm256_min_pd(_mm256_max_pd(t, _mm256_setzero_pd()), _mm256_set1_pd(a->top));
    __m128i b = _mm256_cvttpd_epi32(t);
    /* the 64-bit compare masks narrowed to 32-bit lanes (their low halves) */
    const __m256i low = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);
    __m128i under = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
        _mm256_castpd_si256(_mm256_cmp_pd(v, _mm256_set1_pd(a->lo), _CMP_LT_OQ)), low));
    __m128i over = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
        _mm256_castpd_si256(_mm256_cmp_pd(v, _mm256_set1_pd(a->hi), _CMP_GT_OQ)), low));
    b = _mm_blendv_epi8(b, _mm_set1_epi32(a->nb), under);
    b = _mm_blendv_epi8(b, _mm_set1_epi32(a->nb + 1), over);
    _mm_storeu_si128((__m128i *)out, b);
}

/* Bins of eight floats in float32 arithmetic over the bounds rounded inwards (as stats._bin for float32). */
__attribute__((target("avx2,fma"))) static inline void bins_f32(__m256 v, const gen_args_t *a, int32_t *out) {
    __m256 t = _mm256_mul_ps(_mm256_sub_ps(v, _mm256_set1_ps(a->lo32)), _mm256_set1_ps(a->scale32));
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), _mm256_set1_ps(a->top32));
    __m256 b = _mm256_castsi256_ps(_mm256_cvttps_epi32(t));
    b = _mm256_blendv_ps(b, _mm256_castsi256_ps(_mm256_set1_epi32(a->nb)),
                         _mm256_cmp_ps(v, _mm256_set1_ps(a->lo32), _CMP_LT_OQ));
    b = _mm256_blendv_ps(b, _mm256_castsi256_ps(_mm256_set1_epi32(a->nb + 1)),
                         _mm256_cmp_ps(v, _mm256_set1_ps(a->hi32), _CMP_GT_OQ));
    _mm256_storeu_si256((__m256i *)out, _mm256_castps_si256(b));
}

/* The vector kernels return the number of elements done (a multiple of 8); the scalar kernel does the rest and
 * the results are combined (block_stats). `htbl`: KLANES counters per bin (nb + 6 bins), or NULL. */
#define VSTATE_INIT {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_set1_pd(a->c), _mm256_set1_pd(a->c), 0, 0, 0}

__attribute__((target("avx2,fma"))) static int64_t vec_f64(const double *x, int64_t n, const gen_args_t *a,
                                                            uint32_t *tbl, uint32_t *htbl, gen_result_t *r) {
    vstate_t st = VSTATE_INIT;
    const __m256d vc = _mm256_set1_pd(a->c), vfill = _mm256_set1_pd(a->fill);
    int32_t b[8];
    int64_t i = 0;
    if (htbl)
        for (; i + 8 <= n; i += 8) {
            __m256d v0 = _mm256_loadu_pd(x + i), v1 = _mm256_loadu_pd(x + i + 4);
            bins_f64(v0, a, b);
            bins_f64(v1, a, b + 4);
            vec4(v0, 0, &st, a->has_fill, vfill, vc, tbl, b, htbl, a->nb);
            vec4(v1, 1, &st, a->has_fill, vfill, vc, tbl, b + 4, htbl, a->nb);
        }
    else
        for (; i + 8 <= n; i += 8) {
            vec4(_mm256_loadu_pd(x + i), 0, &st, a->has_fill, vfill, vc, tbl, NULL, NULL, 0);
            vec4(_mm256_loadu_pd(x + i + 4), 1, &st, a->has_fill, vfill, vc, tbl, NULL, NULL, 0);
        }
    vfinish(&st, r, i);
    return i;
}

/* The valid lanes of eight floats (finite, not the fill value) as a 32-bit mask. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256i valid_of(__m256 v, const gen_args_t *a) {
    __m256i aa = _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fffffff));
    __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x7f800000), aa);
    if (a->has_fill)
        valid = _mm256_andnot_si256(_mm256_castps_si256(_mm256_cmp_ps(v, _mm256_set1_ps((float)a->fill), _CMP_EQ_OQ)),
                                    valid);
    return valid;
}

/* float32 (with or without a histogram): keys from the float32 bits directly, eight at a time (a normal float32's
 * exponent field e and top mantissa bits give the float64 key (e + 896 + 52) << 7 | top7, i.e. its bits >> 16
 * plus 948 << 7); float32 subnormals (normal as doubles) through the scalar key; min/max in float32 (exact),
 * sums in float64. */
__attribute__((target("avx2,fma"), always_inline)) static inline int64_t vec_f32_body(
    const float *x, int64_t n, const gen_args_t *a, uint32_t *tbl, uint32_t *htbl, gen_result_t *r, const int hist) {
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), infb = _mm256_set1_epi32(0x7f800000);
    const __m256i normb = _mm256_set1_epi32(0x00800000), zero = _mm256_setzero_si256();
    const __m256i kbias = _mm256_set1_epi32(948 << SK_BITS), koff = _mm256_set1_epi32(KOFF);
    const __m256i trash = _mm256_set1_epi32(KTRASH), lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 vfill = _mm256_set1_ps((float)a->fill), vc32 = _mm256_set1_ps((float)a->c);
    const __m256d vc = _mm256_set1_pd(a->c);
    const int has_fill = a->has_fill;
    __m256 mn = _mm256_set1_ps(INFINITY), mx = _mm256_set1_ps(-INFINITY);
    __m256d s1a = _mm256_setzero_pd(), s1b = _mm256_setzero_pd(), s2a = _mm256_setzero_pd(), s2b = _mm256_setzero_pd();
    int64_t nnan = 0, ninf = 0, nfill = 0, nvalid = 0, i = 0;
    int32_t off[8], hoff[8];
    const __m256i htrash = _mm256_set1_epi32(a->nb + 5);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (hist) { /* bins in float32 arithmetic (bins_f32), excluded lanes to the trash bin, counter offsets */
            bins_f32(v, a, hoff);
            __m256i hb = _mm256_blendv_epi8(htrash, _mm256_loadu_si256((const __m256i *)hoff), valid_of(v, a));
            _mm256_storeu_si256((__m256i *)hoff, _mm256_add_epi32(_mm256_slli_epi32(hb, 3), lanes));
        }
        __m256i b = _mm256_castps_si256(v);
        __m256i aa = _mm256_and_si256(b, absm);
        __m256i valid = _mm256_cmpgt_epi32(infb, aa);
        if (has_fill) valid = _mm256_andnot_si256(_mm256_castps_si256(_mm256_cmp_ps(v, vfill, _CMP_EQ_OQ)), valid);
        int vm = _mm256_movemask_ps(_mm256_castsi256_ps(valid));
        __m256 vz = _mm256_blendv_ps(vc32, v, _mm256_castsi256_ps(valid));
        mn = _mm256_min_ps(mn, _mm256_blendv_ps(mn, v, _mm256_castsi256_ps(valid)));
        mx = _mm256_max_ps(mx, _mm256_blendv_ps(mx, v, _mm256_castsi256_ps(valid)));
        /* sums in float64: excluded lanes must add exactly 0, so they take c as a double */
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(vz)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(vz, 1));
        __m256i vlo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(valid));
        __m256i vhi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(valid, 1));
        __m256d d0 = _mm256_sub_pd(_mm256_blendv_pd(vc, lo, _mm256_castsi256_pd(vlo)), vc);
        __m256d d1 = _mm256_sub_pd(_mm256_blendv_pd(vc, hi, _mm256_castsi256_pd(vhi)), vc);
        s1a = _mm256_add_pd(s1a, d0);
        s1b = _mm256_add_pd(s1b, d1);
        s2a = _mm256_fmadd_pd(d0, d0, s2a);
        s2b = _mm256_fmadd_pd(d1, d1, s2b);
        /* keys: exponent field and top mantissa bits; zeros 0; negatives mirrored; excluded lanes the trash */
        __m256i k = _mm256_add_epi32(_mm256_srli_epi32(aa, 16), kbias);
        __m256i isz = _mm256_cmpeq_epi32(aa, zero);
        k = _mm256_andnot_si256(isz, k);
        k = _mm256_sign_epi32(k, _mm256_or_si256(b, _mm256_set1_epi32(1))); /* negate where the sign bit is set */
        __m256i idx = _mm256_blendv_epi8(trash, _mm256_add_epi32(k, koff), valid);
        _mm256_storeu_si256((__m256i *)off, _mm256_add_epi32(_mm256_slli_epi32(idx, 3), lanes));
        int sub = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_andnot_si256(isz, _mm256_cmpgt_epi32(normb, aa))));
        if (sub)
            for (int l = 0; l < 8; l++)
                if (sub >> l & 1) off[l] = (sketch_key((double)x[i + l]) + KOFF) * KLANES + l;
        tbl[off[0]]++;
        tbl[off[1]]++;
        tbl[off[2]]++;
        tbl[off[3]]++;
        tbl[off[4]]++;
        tbl[off[5]]++;
        tbl[off[6]]++;
        tbl[off[7]]++;
        if (hist)
            for (int l = 0; l < 8; l++) htbl[hoff[l]]++;
        if (vm != 0xff)
            for (int l = 0; l < 8; l++) {
                if (vm >> l & 1) continue;
                float f = x[i + l];
                if (isnan(f)) nnan++;
                else if (isinf(f)) ninf++;
                else nfill++;
            }
    }
    nvalid = i - nnan - ninf - nfill;
    double sa[4], sq[4];
    float l8[8], h8[8];
    _mm256_storeu_pd(sa, _mm256_add_pd(s1a, s1b));
    _mm256_storeu_pd(sq, _mm256_add_pd(s2a, s2b));
    _mm256_storeu_ps(l8, mn);
    _mm256_storeu_ps(h8, mx);
    r->s1 = (sa[0] + sa[1]) + (sa[2] + sa[3]);
    r->s2 = (sq[0] + sq[1]) + (sq[2] + sq[3]);
    r->mn = INFINITY;
    r->mx = -INFINITY;
    for (int l = 0; l < 8; l++) {
        r->mn = l8[l] < r->mn ? l8[l] : r->mn;
        r->mx = h8[l] > r->mx ? h8[l] : r->mx;
    }
    r->nnan = nnan;
    r->ninf = ninf;
    r->nfill = nfill;
    r->nvalid = nvalid;
    return i;
}

__attribute__((target("avx2,fma"))) static int64_t vec_f32_sketch(const float *x, int64_t n, const gen_args_t *a,
                                                                   uint32_t *tbl, gen_result_t *r) {
    return vec_f32_body(x, n, a, tbl, NULL, r, 0);
}

__attribute__((target("avx2,fma"))) static int64_t vec_f32_hist(const float *x, int64_t n, const gen_args_t *a,
                                                                 uint32_t *tbl, uint32_t *htbl, gen_result_t *r) {
    return vec_f32_body(x, n, a, tbl, htbl, r, 1);
}

/* int32 data: exact in float64, binned in float64 as the scalar kernel does. */
__attribute__((target("avx2,fma"))) static int64_t vec_i32(const int32_t *x, int64_t n, const gen_args_t *a,
                                                            uint32_t *tbl, uint32_t *htbl, gen_result_t *r) {
    vstate_t st = VSTATE_INIT;
    const __m256d vc = _mm256_set1_pd(a->c), vfill = _mm256_set1_pd((double)(int32_t)a->fill);
    int32_t b[8];
    int64_t i = 0;
    if (htbl)
        for (; i + 8 <= n; i += 8) {
            __m256d v0 = _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(x + i)));
            __m256d v1 = _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(x + i + 4)));
            bins_f64(v0, a, b);
            bins_f64(v1, a, b + 4);
            vec4(v0, 0, &st, a->has_fill, vfill, vc, tbl, b, htbl, a->nb);
            vec4(v1, 1, &st, a->has_fill, vfill, vc, tbl, b + 4, htbl, a->nb);
        }
    else
        for (; i + 8 <= n; i += 8) {
            __m256d v0 = _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(x + i)));
            __m256d v1 = _mm256_cvtepi32_pd(_mm_loadu_si128((const __m128i *)(x + i + 4)));
            vec4(v0, 0, &st, a->has_fill, vfill, vc, tbl, NULL, NULL, 0);
            vec4(v1, 1, &st, a->has_fill, vfill, vc, tbl, NULL, NULL, 0);
        }
    vfinish(&st, r, i);
    return i;
}
#endif

/* Read back the sketch counters of keys kmin..kmax (zeroing them): nonzero keys and their counts. */
static PyObject *sketch_out(uint32_t *tbl, int32_t kmin, int32_t kmax) {
    PyObject *keys = NULL, *cnts = NULL, *out = NULL;
    int64_t span = kmax >= kmin ? (int64_t)kmax - kmin + 1 : 0, nz = 0;
    int32_t *kb = malloc(sizeof(int32_t) * (span ? span : 1));
    int64_t *cb = malloc(sizeof(int64_t) * (span ? span : 1));
    if (!kb || !cb) {
        PyErr_NoMemory();
        goto done;
    }
    for (int64_t k = kmin; k <= kmax && span; k++) {
        uint32_t *t = tbl + (size_t)(k + KOFF) * KLANES;
        int64_t s = 0;
        for (int l = 0; l < KLANES; l++) s += t[l];
        if (s) {
            kb[nz] = (int32_t)k;
            cb[nz++] = s;
            memset(t, 0, sizeof(uint32_t) * KLANES);
        }
    }
    keys = PyBytes_FromStringAndSize((const char *)kb, sizeof(int32_t) * nz);
    cnts = PyBytes_FromStringAndSize((const char *)cb, sizeof(int64_t) * nz);
    if (keys && cnts) out = PyTuple_Pack(2, keys, cnts);
done:
    free(kb);
    free(cb);
    Py_XDECREF(keys);
    Py_XDECREF(cnts);
    return out;
}

typedef struct {
    int32_t k;
    int64_t c;
} kc_t;

static int kc_cmp(const void *a, const void *b) {
    int32_t x = ((const kc_t *)a)->k, y = ((const kc_t *)b)->k;
    return (x > y) - (x < y);
}

#define WALK_KEYS(T)                                                                                          \
    for (int64_t i = 0; i < n; i++) {                                                                        \
        double d = (double)((const T *)buf)[i];                                                              \
        if (!isfinite(d)) continue;                                                                          \
        uint32_t *t = tbl + (size_t)(sketch_key(d) + KOFF) * KLANES;                                         \
        int64_t s = 0;                                                                                       \
        for (int l = 0; l < KLANES; l++) s += t[l];                                                          \
        if (s) {                                                                                             \
            out[nz].k = sketch_key(d);                                                                       \
            out[nz++].c = s;                                                                                 \
            memset(t, 0, sizeof(uint32_t) * KLANES);                                                         \
        }                                                                                                    \
    }

/* The sketch counters of a small block read back by walking its elements (each finite element's key, read and
 * cleared once) instead of the key range min..max, which for data around zero spans every small magnitude: a
 * block of 100 values from -5 to 5 would otherwise read 2 million counters. Keys sorted on the way out. */
static PyObject *sketch_out_walk(uint32_t *tbl, const void *buf, char c0, int64_t n) {
    kc_t *out = malloc(sizeof(kc_t) * (n ? n : 1));
    PyObject *res = NULL;
    if (!out) return PyErr_NoMemory();
    int64_t nz = 0;
    switch (c0) {
        case 'd': WALK_KEYS(double) break;
        case 'f': WALK_KEYS(float) break;
        case 'b': WALK_KEYS(int8_t) break;
        case 'B': WALK_KEYS(uint8_t) break;
        case 'h': WALK_KEYS(int16_t) break;
        case 'H': WALK_KEYS(uint16_t) break;
        case 'i': WALK_KEYS(int32_t) break;
        case 'I': WALK_KEYS(uint32_t) break;
        case 'q': WALK_KEYS(int64_t) break;
        default: WALK_KEYS(uint64_t) break;
    }
    qsort(out, (size_t)nz, sizeof(kc_t), kc_cmp);
    PyObject *keys = PyBytes_FromStringAndSize(NULL, sizeof(int32_t) * nz);
    PyObject *cnts = PyBytes_FromStringAndSize(NULL, sizeof(int64_t) * nz);
    if (keys && cnts) {
        int32_t *kb = (int32_t *)PyBytes_AS_STRING(keys);
        int64_t *cb = (int64_t *)PyBytes_AS_STRING(cnts);
        for (int64_t j = 0; j < nz; j++) {
            kb[j] = out[j].k;
            cb[j] = out[j].c;
        }
        res = PyTuple_Pack(2, keys, cnts);
    }
    Py_XDECREF(keys);
    Py_XDECREF(cnts);
    free(out);
    return res;
}

/* block_stats(x, dtype_char, fill, c, nb, lo, hi, scale, top, lo32, hi32, scale32, top32, counts)
 *   -> (nvalid, nnan, ninf, nfill, s1, s2, min, max, sketch_keys: bytes of int32, sketch_counts: bytes of int64)
 *   x      : C-contiguous buffer of dtype_char (numpy's one-letter code: b B h H i I l L q Q f d)
 *   fill   : the fill value (exactly representable in the dtype) or None
 *   c      : the shift of the sums (a data value)
 *   nb     : bins; 0 for no histogram (then lo..top32 and counts are ignored; counts may be None)
 *   counts : writable int64 buffer of nb + 6 totals (bins, below, above; the rest unused here); added to
 * At most 2**31 elements per call (the per-lane uint32 counters). */
static PyObject *block_stats(PyObject *self, PyObject *args) {
    Py_buffer xb, cb = {0};
    const char *code;
    PyObject *fillobj, *countsobj;
    gen_args_t a = {0};
    double lo32, hi32, scale32, top32;
    if (!PyArg_ParseTuple(args, "y*sOdiddddddddO", &xb, &code, &fillobj, &a.c, &a.nb, &a.lo, &a.hi, &a.scale,
                          &a.top, &lo32, &hi32, &scale32, &top32, &countsobj))
        return NULL;
    PyObject *out = NULL;
    a.lo32 = (float)lo32; a.hi32 = (float)hi32; a.scale32 = (float)scale32; a.top32 = (float)top32;
    a.has_rng = a.nb > 0;
    a.has_fill = fillobj != Py_None;
    if (a.has_fill) {
        a.fill = PyFloat_AsDouble(fillobj);
        if (a.fill == -1.0 && PyErr_Occurred()) goto done;
    }
    if (a.has_rng) {
        if (PyObject_GetBuffer(countsobj, &cb, PyBUF_WRITABLE) < 0) goto done;
        if (cb.len != (Py_ssize_t)sizeof(int64_t) * (a.nb + 6)) {
            PyErr_SetString(PyExc_ValueError, "block_stats: counts must hold bins + 6 int64");
            goto done;
        }
    }
    size_t width;
    switch (code[0]) {
        case 'b': case 'B': width = 1; break;
        case 'h': case 'H': width = 2; break;
        case 'i': case 'I': case 'f': width = 4; break;
        case 'l': case 'L': width = sizeof(long); break;
        case 'q': case 'Q': case 'd': width = 8; break;
        default:
            PyErr_Format(PyExc_TypeError, "block_stats: unsupported dtype code %s", code);
            goto done;
    }
    if (code[1] || xb.len % width || (int64_t)(xb.len / width) > ((int64_t)1 << 31)) {
        PyErr_SetString(PyExc_ValueError, "block_stats: bad dtype code or buffer size");
        goto done;
    }
    uint32_t *tbl = sketch_table();
    if (!tbl) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t n = (int64_t)(xb.len / width);
    int64_t *counts = a.has_rng ? (int64_t *)cb.buf : NULL;
    gen_result_t r;
    char c0 = code[0];
    if (c0 == 'l') c0 = width == 8 ? 'q' : 'i';
    if (c0 == 'L') c0 = width == 8 ? 'Q' : 'I';
    int64_t done = 0;
    gen_result_t rv = {0, 0, 0, 0, 0.0, 0.0, INFINITY, -INFINITY};
    int vec = (c0 == 'd' || c0 == 'f' || c0 == 'i') && have_avx2();
    uint32_t *htbl = NULL;
    if (vec && a.has_rng && !(htbl = calloc((size_t)(a.nb + 6) * KLANES, sizeof(uint32_t)))) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
#if HAVE_X86
    if (vec && c0 == 'd') done = vec_f64((const double *)xb.buf, n, &a, tbl, htbl, &rv);
    if (vec && c0 == 'f') done = htbl ? vec_f32_hist((const float *)xb.buf, n, &a, tbl, htbl, &rv)
                                      : vec_f32_sketch((const float *)xb.buf, n, &a, tbl, &rv);
    if (vec && c0 == 'i') done = vec_i32((const int32_t *)xb.buf, n, &a, tbl, htbl, &rv);
#endif
    if (htbl)
        for (int32_t k = 0; k < a.nb + 2; k++)
            for (int l = 0; l < KLANES; l++) counts[k] += htbl[(size_t)k * KLANES + l];
    free(htbl);
    switch (c0) {
        case 'd': gen_f64((const double *)xb.buf + done, n - done, &a, counts, tbl, &r); break;
        case 'f': gen_f32((const float *)xb.buf + done, n - done, &a, counts, tbl, &r); break;
        case 'i': gen_i32((const int32_t *)xb.buf + done, n - done, &a, counts, tbl, &r); break;
        case 'b': gen_i8((const int8_t *)xb.buf, n, &a, counts, tbl, &r); break;
        case 'B': gen_u8((const uint8_t *)xb.buf, n, &a, counts, tbl, &r); break;
        case 'h': gen_i16((const int16_t *)xb.buf, n, &a, counts, tbl, &r); break;
        case 'H': gen_u16((const uint16_t *)xb.buf, n, &a, counts, tbl, &r); break;
        case 'I': gen_u32((const uint32_t *)xb.buf, n, &a, counts, tbl, &r); break;
        case 'q': gen_i64((const int64_t *)xb.buf, n, &a, counts, tbl, &r); break;
        default: gen_u64((const uint64_t *)xb.buf, n, &a, counts, tbl, &r); break;
    }
    Py_END_ALLOW_THREADS
    if (done) { /* the vector part's results (its extremes are c where it saw no valid value: c is one) */
        r.nnan += rv.nnan; r.ninf += rv.ninf; r.nfill += rv.nfill; r.nvalid += rv.nvalid;
        r.s1 += rv.s1; r.s2 += rv.s2;
        if (rv.nvalid) {
            r.mn = fmin(r.mn, rv.mn);
            r.mx = fmax(r.mx, rv.mx);
        }
    }
    memset(tbl + (size_t)KTRASH * KLANES, 0, sizeof(uint32_t) * KLANES);
    /* every valid value lies in min..max and keys are monotone: only that key range was touched */
    PyObject *sk;
    if (!r.nvalid) {
        sk = sketch_out(tbl, 1, 0);
    } else {
        int32_t kmin = sketch_key(r.mn), kmax = sketch_key(r.mx);
        /* read back by key range, or by the block's elements where that is less work */
        sk = ((int64_t)kmax - kmin + 1) * KLANES > 4 * n ? sketch_out_walk(tbl, xb.buf, c0, n)
                                                          : sketch_out(tbl, kmin, kmax);
    }
    if (!sk) goto done;
    out = Py_BuildValue("LLLLddddOO", (long long)r.nvalid, (long long)r.nnan, (long long)r.ninf,
                        (long long)r.nfill, r.s1, r.s2, r.mn, r.mx, PyTuple_GET_ITEM(sk, 0), PyTuple_GET_ITEM(sk, 1));
    Py_DECREF(sk);
done:
    PyBuffer_Release(&xb);
    if (cb.obj) PyBuffer_Release(&cb);
    return out;
}

/* count_values(u, width, out): how often each value of an unsigned 8/16-bit buffer occurs, added to the int64
 * buffer out (2**8 or 2**16 entries); four counters per value in turn (runs of one value do not serialise). */
static PyObject *count_values(PyObject *self, PyObject *args) {
    Py_buffer ub, ob;
    int width;
    if (!PyArg_ParseTuple(args, "y*iw*", &ub, &width, &ob)) return NULL;
    PyObject *out = NULL;
    size_t nv = (size_t)1 << (8 * width);
    if ((width != 1 && width != 2) || ob.len != (Py_ssize_t)(sizeof(int64_t) * nv) || ub.len % width) {
        PyErr_SetString(PyExc_ValueError, "count_values: bad width or buffer sizes");
        goto done;
    }
    uint32_t *t = calloc(4 * nv, sizeof(uint32_t));
    if (!t) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t n = (int64_t)(ub.len / width), *o = (int64_t *)ob.buf;
    Py_BEGIN_ALLOW_THREADS
    for (int64_t start = 0; start < n; start += (int64_t)1 << 30) {
        int64_t stop = n - start > ((int64_t)1 << 30) ? start + ((int64_t)1 << 30) : n;
        if (width == 1) {
            const uint8_t *u = (const uint8_t *)ub.buf;
            for (int64_t i = start; i < stop; i++) t[(size_t)u[i] * 4 + (i & 3)]++;
        } else {
            const uint16_t *u = (const uint16_t *)ub.buf;
            for (int64_t i = start; i < stop; i++) t[(size_t)u[i] * 4 + (i & 3)]++;
        }
        for (size_t v = 0; v < nv; v++) {
            o[v] += (int64_t)t[4 * v] + t[4 * v + 1] + t[4 * v + 2] + t[4 * v + 3];
            t[4 * v] = t[4 * v + 1] = t[4 * v + 2] = t[4 * v + 3] = 0;
        }
    }
    Py_END_ALLOW_THREADS
    free(t);
    Py_INCREF(Py_None);
    out = Py_None;
done:
    PyBuffer_Release(&ub);
    PyBuffer_Release(&ob);
    return out;
}

/* sketch_keys(x_float64, out_int32): the sketch key of every value (the reference for tests and for the
 * array-module paths; NaN/inf give 0, callers exclude them first). */
static PyObject *sketch_keys(PyObject *self, PyObject *args) {
    Py_buffer xb, ob;
    if (!PyArg_ParseTuple(args, "y*w*", &xb, &ob)) return NULL;
    PyObject *out = NULL;
    if (xb.len % 8 || ob.len != xb.len / 2) {
        PyErr_SetString(PyExc_ValueError, "sketch_keys: bad buffer sizes");
        goto done;
    }
    const double *x = xb.buf;
    int32_t *k = ob.buf;
    for (Py_ssize_t i = 0; i < xb.len / 8; i++) k[i] = isfinite(x[i]) ? sketch_key(x[i]) : 0;
    Py_INCREF(Py_None);
    out = Py_None;
done:
    PyBuffer_Release(&xb);
    PyBuffer_Release(&ob);
    return out;
}

static PyMethodDef methods[] = {
    {"f32_block", f32_block, METH_VARARGS, "One-pass statistics of a float32 block (see module source)."},
    {"block_stats", block_stats, METH_VARARGS, "One-pass statistics and sketch of a numeric block (see source)."},
    {"count_values", count_values, METH_VARARGS, "Occurrences of each 8/16-bit value (see source)."},
    {"sketch_keys", sketch_keys, METH_VARARGS, "Sketch keys of float64 values (see source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "AVX2 statistics kernels.", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
