/* Batches of rows copied out of a statement (see rtb_odbc_rows in odbc.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int is_bytes(rtb_odbc_type t)
{
    return t == RTB_ODBC_STRING || t == RTB_ODBC_TIMESTAMP || t == RTB_ODBC_BINARY;
}

static int append(rtb_odbc_rows *r, const rtb_odbc_stmt *s)
{
    if (r->count == r->cap_rows) {
        size_t cap = r->cap_rows ? r->cap_rows * 2 : 64;
        rtb_odbc_value *cells = realloc(r->cells, cap * r->ncols * sizeof *cells);
        if (!cells)
            return -1;
        r->cells = cells;
        r->cap_rows = cap;
    }
    for (size_t i = 0; i < r->ncols; i++) {
        rtb_odbc_value v = s->values[i];
        if (is_bytes(v.type)) {
            if (r->used + v.len > r->cap) {
                size_t cap = r->cap ? r->cap : 4096;
                while (cap < r->used + v.len)
                    cap *= 2;
                char *st = realloc(r->storage, cap);
                if (!st)
                    return -1;
                r->storage = st;
                r->cap = cap;
            }
            if (v.len)
                memcpy(r->storage + r->used, v.data, v.len);
            v.data = (const char *)(uintptr_t)r->used; /* an offset until storage stops moving */
            r->used += v.len;
        }
        r->cells[r->count * r->ncols + i] = v;
    }
    r->count++;
    return 0;
}

long rtb_odbc_fetch_rows(rtb_odbc_stmt *s, size_t max, rtb_odbc_rows *r, rtb_odbc_error *err)
{
    r->count = 0;
    r->used = 0;
    if (r->ncols != s->ncols) {
        free(r->cells);
        r->cells = NULL;
        r->cap_rows = 0;
        r->ncols = s->ncols;
    }
    int got = 0;
    while ((max == 0 || r->count < max) && (got = rtb_odbc_fetch(s, err)) == 1)
        if (append(r, s) != 0)
            return odbc_fail(err, RTB_ODBC_E_INTERNAL, "out of memory holding %zu rows", r->count);
    if (got < 0)
        return -1;
    for (size_t i = 0; i < r->count * r->ncols; i++)
        if (is_bytes(r->cells[i].type))
            r->cells[i].data = r->storage + (uintptr_t)r->cells[i].data;
    return (long)r->count;
}

const rtb_odbc_value *rtb_odbc_rows_at(const rtb_odbc_rows *r, size_t row, size_t col)
{
    return row < r->count && col < r->ncols ? &r->cells[row * r->ncols + col] : NULL;
}

void rtb_odbc_rows_free(rtb_odbc_rows *r)
{
    free(r->cells);
    free(r->storage);
    memset(r, 0, sizeof *r);
}
