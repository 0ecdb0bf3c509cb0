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

static PyMethodDef methods[] = {
    {"f32_block", f32_block, METH_VARARGS, "One-pass statistics of a float32 block (see module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "AVX2 statistics kernels.", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
