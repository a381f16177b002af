/*
 * checkpoint.h — using a model that `charrnn train` wrote, from C, with
 * charrnn.h and nothing else. Header-only, for the example program; copy it
 * into your own.
 *
 * A CharRNN checkpoint is a safetensors file: 8 bytes of header length N,
 * N bytes of JSON, then the data. charrnn writes the model's tensors first,
 * in the order of the core's tensor table, so the data section begins with
 * the parameter block exactly as charrnn_init_params would lay it out. This
 * reader maps the file, reads the model's shape and vocabulary from the
 * header, checks every tensor of charrnn_tensor_info_at against the header
 * (dtype F32, shape, data offsets) and, when all are in place, points the
 * parameters at the mapped data: no copy. A file whose tensors are stored in
 * another order (one written by safetensors.torch.save_file, say) is read by
 * copying each tensor into a block of its own.
 *
 * The JSON reader below handles what safetensors headers hold (objects,
 * strings, integer arrays); it is not a general JSON parser.
 */
#ifndef CHARRNN_EXAMPLE_CHECKPOINT_H
#define CHARRNN_EXAMPLE_CHECKPOINT_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "charrnn.h"

typedef struct {
    charrnn_config config;
    const float *params;  /* the parameter block: into the mapping, or `copy` */
    char **vocab;         /* vocab[i]: the UTF-8 bytes of character i, NUL-terminated */
    int in_place;         /* 1 when params points into the mapped file */
    void *mapping;
    size_t mapping_size;
    float *copy;
} checkpoint;

/* ---- a little JSON, enough for a safetensors header ---- */

/* Appends code point cp to out as UTF-8; returns the bytes written. */
static size_t ckpt_put_utf8(uint32_t cp, char *out) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

static int ckpt_hex4(const char *p, uint32_t *value) {
    *value = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        *value = *value * 16 + (uint32_t)d;
    }
    return 1;
}

/* Reads the JSON string starting at the quote *p, up to end; returns a
 * malloc'd, NUL-terminated UTF-8 copy and sets *after past the closing
 * quote, or NULL on a malformed string. */
static char *ckpt_string(const char *p, const char *end, const char **after) {
    if (p >= end || *p != '"') return NULL;
    char *out = malloc((size_t)(end - p) + 1), *o = out;
    if (!out) return NULL;
    for (p++; p < end && *p != '"'; p++) {
        if (*p != '\\') { *o++ = *p; continue; }
        if (++p >= end) break;
        switch (*p) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            uint32_t cp, low;
            if (end - p < 5 || !ckpt_hex4(p + 1, &cp)) { free(out); return NULL; }
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 7 && p[1] == '\\' && p[2] == 'u' && ckpt_hex4(p + 3, &low)) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                p += 6;
            }
            o += ckpt_put_utf8(cp, o);
            break;
        }
        default: *o++ = *p; /* \" \\ \/ */
        }
    }
    if (p >= end) { free(out); return NULL; }
    *o = 0;
    *after = p + 1;
    return out;
}

/* The position just after `"key":` in [p, end), or NULL. Keys are found by
 * their quoted text, so "fc.weight" never matches inside
 * "optimizer.exp_avg.fc.weight". */
static const char *ckpt_find_key(const char *p, const char *end, const char *key) {
    size_t n = strlen(key);
    for (; p + n + 3 <= end; p++) {
        if (p[0] == '"' && memcmp(p + 1, key, n) == 0 && p[n + 1] == '"') {
            const char *q = p + n + 2;
            while (q < end && (*q == ' ' || *q == ':')) q++;
            return q;
        }
    }
    return NULL;
}

/* Reads up to `max` integers of the array at p ('['); returns how many, or -1. */
static int ckpt_ints(const char *p, const char *end, long long *values, int max) {
    if (p >= end || *p != '[') return -1;
    int n = 0;
    for (p++; p < end && *p != ']';) {
        if (*p == ',' || *p == ' ') { p++; continue; }
        char *stop;
        long long v = strtoll(p, &stop, 10);
        if (stop == p || n == max) return -1;
        values[n++] = v;
        p = stop;
    }
    return p < end ? n : -1;
}

/* The end (just past the closing brace) of the JSON object starting at p
 * ('{'), skipping strings; NULL if it does not close before end. */
static const char *ckpt_object_end(const char *p, const char *end) {
    int depth = 0;
    for (; p < end; p++) {
        if (*p == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\') p++;
        } else if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            if (--depth == 0) return p + 1;
        }
    }
    return NULL;
}

/* The object that is the value of "key" in [p, end): its bounds, or 0. */
static int ckpt_object(const char *p, const char *end, const char *key, const char **begin, const char **stop) {
    *begin = ckpt_find_key(p, end, key);
    *stop = *begin && **begin == '{' ? ckpt_object_end(*begin, end) : NULL;
    return *stop != NULL;
}

/* A metadata value (a string) of the header, malloc'd; NULL if absent. */
static char *ckpt_metadata(const char *header, const char *end, const char *key) {
    const char *meta, *meta_end, *after;
    if (!ckpt_object(header, end, "__metadata__", &meta, &meta_end)) return NULL;
    const char *value = ckpt_find_key(meta, meta_end, key);
    return value ? ckpt_string(value, meta_end, &after) : NULL;
}

static void checkpoint_close(checkpoint *c) {
    if (c->vocab)
        for (int i = 0; i < c->config.vocab_size; i++) free(c->vocab[i]);
    free(c->vocab);
    free(c->copy);
    if (c->mapping) munmap(c->mapping, c->mapping_size);
    memset(c, 0, sizeof *c);
}

/* Opens a checkpoint; on failure prints why to stderr and returns 0. */
static int checkpoint_open(const char *path, checkpoint *c) {
    memset(c, 0, sizeof *c);
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size < 8) {
        fprintf(stderr, "%s: cannot read a safetensors file there\n", path);
        if (fd >= 0) close(fd);
        return 0;
    }
    c->mapping_size = (size_t)st.st_size;
    c->mapping = mmap(NULL, c->mapping_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (c->mapping == MAP_FAILED) { c->mapping = NULL; fprintf(stderr, "%s: cannot map it\n", path); return 0; }
    const unsigned char *bytes = c->mapping;
    uint64_t header_length = 0;
    for (int i = 0; i < 8; i++) header_length |= (uint64_t)bytes[i] << (8 * i);
    if (header_length > c->mapping_size - 8) { fprintf(stderr, "%s: header runs past the file\n", path); goto fail; }
    const char *header = (const char *)bytes + 8, *end = header + header_length;
    const unsigned char *data = bytes + 8 + header_length;
    size_t data_size = c->mapping_size - 8 - header_length;

    /* The shape: V and H from fc.weight, the cell from the metadata (files
     * from before there was a choice are LSTMs), L by counting layers. */
    long long fc[2];
    const char *entry, *entry_end, *shape;
    if (!ckpt_object(header, end, "fc.weight", &entry, &entry_end) ||
        !(shape = ckpt_find_key(entry, entry_end, "shape")) || ckpt_ints(shape, entry_end, fc, 2) != 2) {
        fprintf(stderr, "%s: no fc.weight [V, H] tensor\n", path);
        goto fail;
    }
    c->config.vocab_size = (int32_t)fc[0];
    c->config.hidden_size = (int32_t)fc[1];
    char *cell = ckpt_metadata(header, end, "cell");
    charrnn_status s = charrnn_cell_from_name(cell ? cell : "lstm", &c->config.cell);
    if (s != CHARRNN_OK) { fprintf(stderr, "%s: unknown cell '%s'\n", path, cell); free(cell); goto fail; }
    free(cell);
    charrnn_cell_info info;
    charrnn_cell_info_get(c->config.cell, &info);
    for (int layers = 0;; layers++) {
        char name[CHARRNN_TENSOR_NAME_MAX];
        snprintf(name, sizeof name, "%s.weight_ih_l%d", info.name, layers);
        if (!ckpt_find_key(header, end, name)) { c->config.num_layers = layers; break; }
    }
    if ((s = charrnn_config_validate(&c->config)) != CHARRNN_OK) {
        fprintf(stderr, "%s: %d %s layers of %d units over %d characters: %s\n", path, c->config.num_layers,
                info.name, c->config.hidden_size, c->config.vocab_size, charrnn_status_message(s));
        goto fail;
    }

    /* Every tensor of the core's table: present, F32, the table's shape, and
     * (for the in-place path) at the table's offset. */
    int32_t count;
    size_t n_params;
    charrnn_tensor_count(&c->config, &count);
    charrnn_param_count(&c->config, &n_params);
    c->in_place = 1;
    long long (*begin_end)[2] = malloc((size_t)count * sizeof *begin_end);
    if (!begin_end) { fprintf(stderr, "%s: out of memory\n", path); goto fail; }
    for (int32_t i = 0; i < count; i++) {
        charrnn_tensor_info t;
        charrnn_tensor_info_at(&c->config, i, &t);
        long long dims[2] = {0, 0}, offsets[2];
        const char *e, *e_end, *dtype, *sh, *off;
        if (!ckpt_object(header, end, t.name, &e, &e_end) ||
            !(dtype = ckpt_find_key(e, e_end, "dtype")) || strncmp(dtype, "\"F32\"", 5) != 0 ||
            !(sh = ckpt_find_key(e, e_end, "shape")) || ckpt_ints(sh, e_end, dims, 2) != t.ndim ||
            dims[0] != t.shape[0] || (t.ndim == 2 && dims[1] != t.shape[1]) ||
            !(off = ckpt_find_key(e, e_end, "data_offsets")) || ckpt_ints(off, e_end, offsets, 2) != 2 ||
            offsets[0] < 0 || offsets[1] - offsets[0] != (long long)(t.count * 4) || (size_t)offsets[1] > data_size) {
            fprintf(stderr, "%s: tensor %s is missing, not F32 or not of the shape the model needs\n", path, t.name);
            free(begin_end);
            goto fail;
        }
        if ((size_t)offsets[0] != t.offset * 4) c->in_place = 0;
        begin_end[i][0] = offsets[0];
        begin_end[i][1] = offsets[1];
    }
    if (c->in_place && ((uintptr_t)data % sizeof(float)) == 0) {
        c->params = (const float *)data;
    } else {
        c->in_place = 0;
        c->copy = malloc(n_params * sizeof(float));
        if (!c->copy) { fprintf(stderr, "%s: out of memory\n", path); free(begin_end); goto fail; }
        for (int32_t i = 0; i < count; i++) {
            charrnn_tensor_info t;
            charrnn_tensor_info_at(&c->config, i, &t);
            memcpy(c->copy + t.offset, data + begin_end[i][0], t.count * sizeof(float));
        }
        c->params = c->copy;
    }
    free(begin_end);

    /* The vocabulary: a JSON array of one-character strings, itself stored
     * as a JSON string in the metadata. */
    char *vocab = ckpt_metadata(header, end, "vocab");
    const char *v = vocab, *vend = vocab ? vocab + strlen(vocab) : NULL;
    c->vocab = calloc((size_t)c->config.vocab_size, sizeof(char *));
    int n = 0;
    if (vocab && c->vocab && *v == '[') {
        for (v++; v < vend && *v != ']' && n < c->config.vocab_size;) {
            if (*v == ',' || *v == ' ') { v++; continue; }
            if (!(c->vocab[n] = ckpt_string(v, vend, &v))) break;
            n++;
        }
    }
    free(vocab);
    if (n != c->config.vocab_size) {
        fprintf(stderr, "%s: the 'vocab' metadata does not list %d characters\n", path, c->config.vocab_size);
        goto fail;
    }
    return 1;
fail:
    checkpoint_close(c);
    return 0;
}

#endif
