/* Value formatting for the record: DS numbers, dates/times, UTF-8. Pure
 * functions, no DICOM calls. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Fast path for the common case, a value with a short decimal form (152.3,
 * -20.55, 600): v == r / 10^d for an integer r and small d. The quotient is
 * correctly rounded, as is strtod of the text "r with d decimals", so both
 * are the same double and the text reads back exactly; the smallest such d
 * gives the shortest text. No printf: MLC lists make this the builder's
 * hottest loop. -1 when there is no such form (the general path decides). */
static int format_short_decimal(double v, char out[RTB_DS_TEXT])
{
    static const double p10[] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8};
    for (int d = 0; d < (int)(sizeof p10 / sizeof p10[0]); d++) {
        double scaled = v * p10[d];
        if (fabs(scaled) >= 1e15)
            return -1;
        double r = nearbyint(scaled);
        if (r / p10[d] != v)
            continue;
        unsigned long long u = (unsigned long long)fabs(r);
        char digits[24];
        int n = 0;
        do {
            digits[n++] = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        while (n <= d)
            digits[n++] = '0'; /* 0.05: at least one digit before the point */
        int len = (v < 0) + n + (d > 0);
        if (len > RTB_DS_TEXT - 1)
            return -1;
        char *o = out;
        if (v < 0)
            *o++ = '-';
        for (int i = n - 1; i >= 0; i--) {
            *o++ = digits[i];
            if (i == d && d > 0)
                *o++ = '.';
        }
        *o = '\0';
        return 0;
    }
    return -1;
}

int rtb_rtrecord_format_ds(double v, char out[RTB_DS_TEXT])
{
    if (!isfinite(v))
        return -1;
    if (v == 0.0) { /* also -0.0, which %g would print as "-0" */
        strcpy(out, "0");
        return 0;
    }
    if (format_short_decimal(v, out) == 0)
        return 0;
    /* The shortest text that reads back as v: 152.3 stays "152.3" rather than
     * "152.30000000000001". Fixed notation first (180 -> "180", never "1.8e+02"),
     * scientific only for magnitudes fixed notation cannot fit in 16
     * characters. When nothing both round-trips and fits, the longest that
     * fits wins: precision is lost only beyond the ~12th significant digit.
     * Any double fits at %.1g ("-1e-300"). */
    char buf[400];
    out[0] = '\0';
    for (int d = 0; d <= 15 && !out[0]; d++) {
        int n = snprintf(buf, sizeof buf, "%.*f", d, v);
        if (n > 0 && n <= RTB_DS_TEXT - 1 && strtod(buf, NULL) == v)
            memcpy(out, buf, (size_t)n + 1);
    }
    for (int p = 1; p <= 17 && !out[0]; p++) {
        int n = snprintf(buf, sizeof buf, "%.*g", p, v);
        if (n <= 0 || n > RTB_DS_TEXT - 1)
            continue;
        if (strtod(buf, NULL) == v) {
            memcpy(out, buf, (size_t)n + 1);
            break;
        }
    }
    if (!out[0]) /* no exact form fits: the most precise one that does */
        for (int p = 17; p >= 1 && !out[0]; p--) {
            int n = snprintf(buf, sizeof buf, "%.*g", p, v);
            if (n > 0 && n <= RTB_DS_TEXT - 1)
                memcpy(out, buf, (size_t)n + 1);
        }
    /* A locale with a decimal comma must not leak into DICOM. */
    for (char *c = out; *c; c++)
        if (*c == ',')
            *c = '.';
    return out[0] ? 0 : -1;
}

static int digits(const char *s, int n, int *value)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *value = v;
    return 0;
}

/* Writes v (>= 0) as exactly n digits, zero-padded: the DA and TM fields. */
static char *put_digits(char *out, int v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return out + n;
}

static int days_in_month(int y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

int rtb_rtrecord_parse_datetime(const char *text, char da[9], char tm[14])
{
    int y, mo, d, h = 0, mi = 0, s = 0;
    const char *p = text;
    da[0] = tm[0] = '\0';
    if (!p)
        return -1;
    /* Date: "YYYY-MM-DD" (ISO, what the ODBC layer gives) or "YYYYMMDD" (DICOM). */
    int iso = strlen(p) >= 10 && p[4] == '-' && p[7] == '-';
    if (digits(p, 4, &y) || digits(p + (iso ? 5 : 4), 2, &mo) || digits(p + (iso ? 8 : 6), 2, &d))
        return -1;
    p += iso ? 10 : 8;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return -1;
    /* y, mo, d have at most 4 and 2 digits each: 8 characters. */
    *put_digits(put_digits(put_digits(da, y % 10000, 4), mo % 100, 2), d % 100, 2) = '\0';
    if (*p == '\0')
        return 0;
    /* Time: "THH:MM[:SS[.f]]" / " HH:MM..." (ISO) or "HHMMSS[.f]" right after the date. */
    if (iso) {
        if (*p != 'T' && *p != ' ')
            return -1;
        p++;
        if (digits(p, 2, &h) || p[2] != ':' || digits(p + 3, 2, &mi))
            return -1;
        p += 5;
        if (*p == ':') {
            if (digits(p + 1, 2, &s))
                return -1;
            p += 3;
        }
    } else {
        if (digits(p, 2, &h) || digits(p + 2, 2, &mi) || digits(p + 4, 2, &s))
            return -1;
        p += 6;
    }
    if (h > 23 || mi > 59 || s > 60)
        return -1;
    *put_digits(put_digits(put_digits(tm, h % 100, 2), mi % 100, 2), s % 100, 2) = '\0';
    int n = 6;
    if (*p == '.') {
        /* Keep up to 6 fraction digits (TM's limit); drop an all-zero fraction
         * so "09:52:10.000" and "09:52:10" give the same bytes. */
        p++;
        size_t k = 0;
        char frac[7];
        while (isdigit((unsigned char)*p)) {
            if (k < 6)
                frac[k++] = *p;
            p++;
        }
        if (k == 0)
            return -1;
        while (k > 0 && frac[k - 1] == '0')
            k--;
        if (k > 0) {
            tm[n++] = '.';
            memcpy(tm + n, frac, k);
            n += (int)k;
            tm[n] = '\0';
        }
    }
    return *p == '\0' ? 0 : -1;
}

int rtb_rtrecord_utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        int n;
        unsigned min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1, min = 0x80, c &= 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, min = 0x800, c &= 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return 0;
        }
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            c = (c << 6) | (p[i] & 0x3F);
        }
        /* Overlong forms, surrogates and values past U+10FFFF are not UTF-8. */
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return 0;
        p += n + 1;
    }
    return 1;
}

size_t rtb_rtrecord_utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

size_t rtb_rtrecord_utf8_prefix(const char *s, size_t len, size_t chars)
{
    size_t i = 0;
    for (size_t n = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80 && n++ == chars)
            break;
    }
    return i;
}
