/*
 * voxtral_dump.c - see voxtral_dump.h. Part of the voxtral-oracle example adapter.
 */
#include "voxtral_dump.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vox_dump_on = 0;

#define DUMP_MAX_TAPS 128

typedef struct {
    char name[64];
    float *data;
    size_t rows, cols, cap_rows;
} dump_tap_t;

static dump_tap_t taps[DUMP_MAX_TAPS];
static int n_taps = 0;
static char dump_dir[1024];
static int64_t *forced = NULL;
static size_t n_forced = 0;
static int64_t *tokens = NULL;
static size_t n_tokens = 0, cap_tokens = 0;
static int tokens_ended = 0;

static void die(const char *what) {
    fprintf(stderr, "voxtral dump: %s\n", what);
    exit(1);
}

/* Read a 1-D little-endian int64 .npy (version 1 or 2, C order). */
static int64_t *read_npy_i64(const char *path, size_t *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "voxtral dump: cannot open %s\n", path); return NULL; }
    unsigned char magic[8];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) {
        fprintf(stderr, "voxtral dump: %s: not an .npy file\n", path); fclose(f); return NULL;
    }
    size_t hlen;
    if (magic[6] == 1) {
        unsigned char b[2];
        if (fread(b, 1, 2, f) != 2) { fclose(f); return NULL; }
        hlen = b[0] | (b[1] << 8);
    } else {
        unsigned char b[4];
        if (fread(b, 1, 4, f) != 4) { fclose(f); return NULL; }
        hlen = b[0] | (b[1] << 8) | ((size_t)b[2] << 16) | ((size_t)b[3] << 24);
    }
    if (hlen > 65536) { fprintf(stderr, "voxtral dump: %s: header too long\n", path); fclose(f); return NULL; }
    char *h = calloc(hlen + 1, 1);
    if (!h || fread(h, 1, hlen, f) != hlen) { free(h); fclose(f); return NULL; }
    const char *shape = strstr(h, "'shape': (");
    if (!strstr(h, "'descr': '<i8'") || !strstr(h, "'fortran_order': False") || !shape) {
        fprintf(stderr, "voxtral dump: %s: expected a 1-D '<i8' C-order array\n", path);
        free(h); fclose(f); return NULL;
    }
    char *end;
    long long n = strtoll(shape + 10, &end, 10);
    if (n <= 0 || n > 1000000 || (*end != ',' && *end != ')') || (end[0] == ',' && end[1] != ')')) {
        fprintf(stderr, "voxtral dump: %s: expected a 1-D array of 1..1000000 tokens\n", path);
        free(h); fclose(f); return NULL;
    }
    free(h);
    int64_t *v = malloc((size_t)n * sizeof(int64_t));
    if (!v || fread(v, sizeof(int64_t), (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "voxtral dump: %s: truncated\n", path); free(v); fclose(f); return NULL;
    }
    fclose(f);
    *n_out = (size_t)n;
    return v;
}

int vox_dump_init(const char *dir, const char *tokens_in) {
    if (strlen(dir) >= sizeof(dump_dir) - 80) { fprintf(stderr, "voxtral dump: directory name too long\n"); return -1; }
    strcpy(dump_dir, dir);
    if (tokens_in) {
        forced = read_npy_i64(tokens_in, &n_forced);
        if (!forced) return -1;
    }
    vox_dump_on = 1;
    return 0;
}

static dump_tap_t *tap_for(const char *name, size_t cols) {
    for (int i = 0; i < n_taps; i++)
        if (strcmp(taps[i].name, name) == 0) {
            if (taps[i].cols != cols) die("a tap changed its row length");
            return &taps[i];
        }
    if (n_taps == DUMP_MAX_TAPS) die("too many taps");
    dump_tap_t *t = &taps[n_taps++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->cols = cols;
    return t;
}

void vox_dump_rows(const char *name, const float *rows, int n_rows, int n_cols) {
    if (!vox_dump_on || n_rows <= 0) return;
    dump_tap_t *t = tap_for(name, (size_t)n_cols);
    if (t->rows + (size_t)n_rows > t->cap_rows) {
        size_t cap = t->cap_rows ? t->cap_rows : 64;
        while (cap < t->rows + (size_t)n_rows) cap *= 2;
        float *d = realloc(t->data, cap * t->cols * sizeof(float));
        if (!d) die("out of memory");
        t->data = d;
        t->cap_rows = cap;
    }
    memcpy(t->data + t->rows * t->cols, rows, (size_t)n_rows * t->cols * sizeof(float));
    t->rows += (size_t)n_rows;
}

void vox_dump_rows_layer(const char *fmt, int layer, const float *rows, int n_rows, int n_cols) {
    char name[64];
    snprintf(name, sizeof(name), fmt, layer);
    vox_dump_rows(name, rows, n_rows, n_cols);
}

void vox_dump_colmajor(const char *name, const float *buf, int dim, int len) {
    if (!vox_dump_on) return;
    float *row = malloc((size_t)dim * sizeof(float));
    if (!row) die("out of memory");
    for (int s = 0; s < len; s++) {
        for (int d = 0; d < dim; d++) row[d] = buf[(size_t)d * len + s];
        vox_dump_rows(name, row, 1, dim);
    }
    free(row);
}

int vox_dump_fed_token(int pos, int own) {
    if (!vox_dump_on) return own;
    if (!forced) return tokens_ended ? VOX_DUMP_PAD : own;  /* the golden's rule for tokens_in */
    if (pos < 0 || (size_t)pos >= n_forced) die("tokens_in is shorter than the number of positions");
    return (int)forced[pos];
}

void vox_dump_check_prompt(int pos, int token) {
    if (!vox_dump_on || !forced) return;
    if ((size_t)pos >= n_forced || forced[pos] != token)
        fprintf(stderr, "voxtral dump: warning: prompt token %d is %d, tokens_in has %lld\n", pos, token,
                (size_t)pos < n_forced ? (long long)forced[pos] : -1LL);
}

void vox_dump_token(int token, int eos) {
    if (!vox_dump_on || tokens_ended) return;
    if (n_tokens == cap_tokens) {
        cap_tokens = cap_tokens ? cap_tokens * 2 : 256;
        int64_t *t = realloc(tokens, cap_tokens * sizeof(int64_t));
        if (!t) die("out of memory");
        tokens = t;
    }
    tokens[n_tokens++] = token;
    if (token == eos) tokens_ended = 1;
}

int vox_dump_past_eos(void) { return vox_dump_on; }

static int encoder_only = 0;
void vox_dump_set_encoder_only(void) { encoder_only = 1; }
int vox_dump_encoder_only(void) { return encoder_only; }

/* .npy version 1.0: magic, header length, a dict padded with spaces to a multiple of 64 bytes. */
static int write_npy(const char *name, const char *descr, const char *shape, const void *data, size_t bytes) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s.npy", dump_dir, name);
    char dict[256];
    int n = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) { fprintf(stderr, "voxtral dump: cannot write %s\n", path); return -1; }
    unsigned short hlen = (unsigned short)(n + pad + 1);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    fwrite(pre, 1, 10, f);
    fwrite(dict, 1, (size_t)n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    int ok = fwrite(data, 1, bytes, f) == bytes;
    if (fclose(f) != 0 || !ok) { fprintf(stderr, "voxtral dump: short write to %s\n", path); return -1; }
    return 0;
}

int vox_dump_finish(void) {
    if (!vox_dump_on) return 0;
    int rc = 0;
    char shape[64];
    for (int i = 0; i < n_taps; i++) {
        dump_tap_t *t = &taps[i];
        size_t bytes = t->rows * t->cols * sizeof(float);
        if (strcmp(t->name, "mel") == 0) {
            /* voxtral.c keeps the mel frame-major [T, 128]; the golden layout is [128, T]. */
            float *tr = malloc(bytes);
            if (!tr) die("out of memory");
            for (size_t r = 0; r < t->rows; r++)
                for (size_t c = 0; c < t->cols; c++) tr[c * t->rows + r] = t->data[r * t->cols + c];
            snprintf(shape, sizeof(shape), "(%zu, %zu)", t->cols, t->rows);
            rc |= write_npy(t->name, "<f4", shape, tr, bytes);
            free(tr);
        } else if (t->rows == 1 && strcmp(t->name, "dec.t_cond") == 0) {
            snprintf(shape, sizeof(shape), "(%zu,)", t->cols);
            rc |= write_npy(t->name, "<f4", shape, t->data, bytes);
        } else {
            snprintf(shape, sizeof(shape), "(%zu, %zu)", t->rows, t->cols);
            rc |= write_npy(t->name, "<f4", shape, t->data, bytes);
        }
    }
    if (!encoder_only) {
        snprintf(shape, sizeof(shape), "(%zu,)", n_tokens);
        rc |= write_npy("tokens", "<i8", shape, tokens, n_tokens * sizeof(int64_t));
    }
    fprintf(stderr, "voxtral dump: wrote %d taps and %zu tokens to %s\n", n_taps, n_tokens, dump_dir);
    return rc;
}
