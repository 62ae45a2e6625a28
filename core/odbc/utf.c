/* UTF-8 <-> UTF-16, because text crosses into the driver as SQL_C_WCHAR: the ANSI
 * entry points would convert through the process locale, which is "C" under cron
 * and would turn "Müller" into "M?ller". unixODBC's SQLWCHAR is 16 bits. */
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

/* Decodes one UTF-8 sequence at s (n bytes left). Returns its length, or 0 if
 * invalid (overlong forms, surrogates and values above U+10FFFF are invalid). */
static size_t decode_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t len;
    uint32_t c, min;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2, c = s[0] & 0x1F, min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3, c = s[0] & 0x0F, min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4, c = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    *cp = c;
    return len;
}

SQLWCHAR *odbc_utf16_from_utf8(const char *s, size_t len, size_t *units, int *invalid)
{
    *invalid = 0;
    /* Never more UTF-16 units than UTF-8 bytes. */
    SQLWCHAR *w = malloc((len + 1) * sizeof *w);
    if (!w)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = decode_utf8(p + i, len - i, &cp);
        if (n == 0) {
            free(w);
            *invalid = 1;
            return NULL;
        }
        i += n;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            w[o++] = (SQLWCHAR)(0xD800 + (cp >> 10));
            w[o++] = (SQLWCHAR)(0xDC00 + (cp & 0x3FF));
        } else {
            w[o++] = (SQLWCHAR)cp;
        }
    }
    w[o] = 0;
    *units = o;
    return w;
}

size_t odbc_utf8_into(const SQLWCHAR *w, size_t units, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < units; i++) {
        uint32_t c = w[i];
        if (c >= 0xD800 && c <= 0xDBFF && i + 1 < units && w[i + 1] >= 0xDC00 &&
            w[i + 1] <= 0xDFFF) {
            c = 0x10000 + ((c - 0xD800) << 10) + (w[i + 1] - 0xDC00);
            i++;
        } else if (c >= 0xD800 && c <= 0xDFFF) {
            c = 0xFFFD;
        }
        if (c < 0x80) {
            out[o++] = (char)c;
        } else if (c < 0x800) {
            out[o++] = (char)(0xC0 | (c >> 6));
            out[o++] = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out[o++] = (char)(0xE0 | (c >> 12));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (c & 0x3F));
        } else {
            /* a surrogate pair took two units, so 4 bytes still fit in 2 * 3 */
            out[o++] = (char)(0xF0 | (c >> 18));
            out[o++] = (char)(0x80 | ((c >> 12) & 0x3F));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (c & 0x3F));
        }
    }
    out[o] = '\0';
    return o;
}

char *odbc_utf8_from_utf16(const SQLWCHAR *w, size_t units, size_t *len)
{
    char *out = malloc(units * 3 + 1); /* a unit never needs more than 3 bytes */
    if (out)
        *len = odbc_utf8_into(w, units, out);
    return out;
}
