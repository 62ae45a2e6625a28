/* Checked element setters: every value the builder writes goes through one of
 * these, so VR lengths, character rules, defined terms and the Type 1/2/3
 * presence rules are enforced in one place. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void full_field(const rtb_builder *b, const char *field, char *out, size_t size)
{
    if (b->path[0] && field && field[0])
        snprintf(out, size, "%s.%s", b->path, field);
    else
        snprintf(out, size, "%s", b->path[0] ? b->path : (field ? field : ""));
}

int rtb_b_fail(rtb_builder *b, rtb_rtrecord_error_code code, const char *field, const char *fmt,
               ...)
{
    char rest[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof rest, fmt, ap);
    va_end(ap);
    b->err->code = code;
    full_field(b, field, b->err->field, sizeof b->err->field);
    snprintf(b->err->message, sizeof b->err->message, "%s %s", b->err->field, rest);
    return -1;
}

int rtb_b_dicom_fail(rtb_builder *b, const char *tag, const rtb_dicom_error *derr)
{
    b->err->code = RTB_RTRECORD_E_DICOM;
    full_field(b, NULL, b->err->field, sizeof b->err->field);
    snprintf(b->err->message, sizeof b->err->message, "writing (%s)%s%s: %.300s", tag,
             b->err->field[0] ? " for " : "", b->err->field, derr->message);
    return -1;
}

/* Every element goes in with its VR named: private elements have no
 * dictionary VR, and for public ones the builder knows the VR already, which
 * spares a dictionary lookup per element (a VMAT record has ~10 000). */
static int put(rtb_builder *b, rtb_ds *ds, const char *tag, const char *vr,
               const char *const *values, size_t n)
{
    rtb_dicom_error derr;
    if (rtb_ds_set_vr(ds, tag, vr, values, n, &derr) != 0)
        return rtb_b_dicom_fail(b, tag, &derr);
    return 0;
}

static int put1(rtb_builder *b, rtb_ds *ds, const char *tag, const char *vr, const char *value)
{
    return put(b, ds, tag, vr, &value, value && value[0] ? 1 : 0);
}

/* Maximum value length in bytes, and whether the VR allows control characters
 * (CR, LF, FF, TAB) and backslashes in its (single) value. */
#define VR2(a, b) (((a) << 8) | (b))

/* The VR's two letters as one number (0 if it is not two letters). */
static int vr_code(const char *vr)
{
    return vr[0] && vr[1] && !vr[2] ? VR2(vr[0], vr[1]) : 0;
}

static size_t vr_limit(int vr, int *free_text)
{
    *free_text = 0;
    switch (vr) {
    case VR2('A', 'E'): case VR2('C', 'S'): case VR2('S', 'H'): case VR2('D', 'S'): return 16;
    case VR2('L', 'O'): case VR2('P', 'N'): case VR2('U', 'I'): return 64;
    case VR2('I', 'S'): return 12;
    case VR2('D', 'A'): return 8;
    case VR2('T', 'M'): return 14;
    case VR2('S', 'T'): *free_text = 1; return 1024;
    case VR2('L', 'T'): *free_text = 1; return 10240;
    case VR2('U', 'T'): *free_text = 1; return 0xFFFFFFFEu;
    default: return 64;
    }
}

/* The first 40 characters of s, for a message: printf's "%.*s" with these two. */
#define SHOWN(s, len) (int)rtb_rtrecord_utf8_prefix((s), (len), 40), (s)

static void note(rtb_builder *b, const char *field, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(rtb_builder *b, const char *field, const char *fmt, ...)
{
    rtb_rtrecord_notes *n = b->notes;
    if (!n)
        return;
    if (n->n == RTB_RTRECORD_NOTES_MAX) {
        n->more++;
        return;
    }
    char where[128], rest[160];
    full_field(b, field, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof rest, fmt, ap);
    va_end(ap);
    /* A long path and message lose their end, never the field's name. */
    int k = snprintf(n->note[n->n], sizeof n->note[0], "%s ", where);
    if (k > 0 && (size_t)k < sizeof n->note[0])
        snprintf(n->note[n->n] + k, sizeof n->note[0] - (size_t)k, "%s", rest);
    n->n++;
}

/* Character rules shared by text values and name components. */
static int check_chars(rtb_builder *b, const char *field, const char *s, const char *vr,
                       int free_text, const char *forbidden)
{
    int non_ascii = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x80) {
            non_ascii = 1;
        } else if (*p < 0x20 || *p == 0x7F) {
            if (!free_text || !(*p == '\r' || *p == '\n' || *p == '\f' || *p == '\t'))
                return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field,
                                  "contains a control character (0x%02X), not allowed in %s", *p, vr);
        } else if (!free_text && *p == '\\') {
            return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field,
                              "contains a backslash, the value separator of %s", vr);
        } else if (forbidden && strchr(forbidden, *p)) {
            return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "contains '%c', not allowed here", *p);
        }
    }
    if (non_ascii) {
        if (!rtb_rtrecord_utf8_valid(s))
            return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "is not valid UTF-8");
        b->non_ascii = 1;
    }
    return 0;
}

int rtb_b_text(rtb_builder *b, rtb_ds *ds, const char *tag, const char *vr, const char *field,
               const char *value, int type2, rtb_text_policy policy)
{
    if (!value || !value[0])
        return type2 ? put1(b, ds, tag, vr, "") : 0;
    int free_text, code = vr_code(vr);
    size_t max = vr_limit(code, &free_text);
    if (code == VR2('U', 'I')) {
        if (!rtb_dicom_uid_valid(value))
            return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "is not a valid UID: '%s'", value);
    } else if (code == VR2('C', 'S')) {
        for (const char *p = value; *p; p++)
            if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == ' ' || *p == '_'))
                return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field,
                                  "'%s' is not a code string (A-Z, 0-9, space, _)", value);
    }
    if (check_chars(b, field, value, vr, free_text, NULL) != 0)
        return -1;
    size_t len = strlen(value), chars = len <= max ? len : rtb_rtrecord_utf8_chars(value, len);
    if (chars <= max)
        return put1(b, ds, tag, vr, value);
    if (policy == RTB_TEXT_STRICT)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "is %zu characters long; %s allows %zu: '%.*s...'",
                          chars, vr, max, SHOWN(value, len));
    note(b, field, "is %zu characters long; %s allows %zu: cut ('%.*s...')", chars, vr, max,
         SHOWN(value, len));
    len = rtb_rtrecord_utf8_prefix(value, len, max);
    char *clipped = malloc(len + 1);
    if (!clipped)
        return rtb_b_fail(b, RTB_RTRECORD_E_DICOM, field, "cannot be written: out of memory");
    memcpy(clipped, value, len);
    clipped[len] = '\0';
    int rc = put1(b, ds, tag, vr, clipped);
    free(clipped);
    return rc;
}

int rtb_b_text1(rtb_builder *b, rtb_ds *ds, const char *tag, const char *vr, const char *field,
                const char *value)
{
    if (!value || !value[0])
        return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, field, "is required");
    return rtb_b_text(b, ds, tag, vr, field, value, 1, RTB_TEXT_STRICT);
}

int rtb_b_term(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field, const char *value,
               const char *const *terms, int type, const char **written)
{
    if (written)
        *written = "";
    if (value && value[0]) {
        for (size_t i = 0; terms[i]; i++)
            if (strcmp(terms[i], value) == 0) {
                if (written)
                    *written = terms[i];
                return put1(b, ds, tag, "CS", terms[i]);
            }
    }
    if (type == 1) {
        if (!value || !value[0])
            return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, field, "is required");
        char list[160] = "";
        for (size_t i = 0; terms[i]; i++) {
            strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
            strncat(list, terms[i], sizeof list - strlen(list) - 1);
        }
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "'%s' is not one of %s", value, list);
    }
    /* Never an invented term: Type 2 gets an empty value, Type 3 nothing. */
    return type == 2 ? put1(b, ds, tag, "CS", "") : 0;
}

int rtb_b_name(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field,
               const rtb_rtrecord_name *name, int type2)
{
    const char *parts[5] = {name->family, name->given, name->middle, name->prefix, name->suffix};
    static const char *const part_names[5] = {"family", "given", "middle", "prefix", "suffix"};
    char value[64 * 4 + 8] = ""; /* 64 characters of at most 4 bytes, 4 separators */
    size_t len = 0, last = 0;
    for (int i = 0; i < 5; i++) {
        const char *p = parts[i] ? parts[i] : "";
        char sub[128];
        snprintf(sub, sizeof sub, "%s.%s", field, part_names[i]);
        /* ^ and = separate components and groups of a PN. */
        if (check_chars(b, sub, p, "PN", 0, "^=") != 0)
            return -1;
        size_t n = strlen(p);
        if (len + n + 1 >= sizeof value)
            return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field,
                              "is longer than a PN component group allows (64 characters): '%.*s...'",
                              SHOWN(p, n));
        if (i)
            value[len++] = '^';
        memcpy(value + len, p, n);
        len += n;
        value[len] = '\0';
        if (n)
            last = len;
    }
    value[last] = '\0'; /* no trailing empty components */
    size_t chars = rtb_rtrecord_utf8_chars(value, last);
    if (chars > 64)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field,
                          "is %zu characters long; a PN component group allows 64: '%.*s...'", chars,
                          SHOWN(value, last));
    if (!last)
        return type2 ? put1(b, ds, tag, "PN", "") : 0;
    return put1(b, ds, tag, "PN", value);
}

int rtb_b_ds(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field, double v, int type2)
{
    if (isnan(v))
        return type2 ? put1(b, ds, tag, "DS", "") : 0;
    char text[RTB_DS_TEXT];
    if (rtb_rtrecord_format_ds(v, text) != 0)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "is not a finite number");
    return put1(b, ds, tag, "DS", text);
}

int rtb_b_fl(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field, double v)
{
    if (isnan(v))
        return 0;
    if (!isfinite(v))
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "is not a finite number");
    char text[32];
    snprintf(text, sizeof text, "%.9g", v); /* a float's 9 digits: the value read back as given */
    /* Binary VR: the dictionary's FL element, set from its text form. */
    const char *value = text;
    rtb_dicom_error derr;
    if (rtb_ds_set(ds, tag, &value, 1, &derr) != 0)
        return rtb_b_dicom_fail(b, tag, &derr);
    return 0;
}

int rtb_b_ds_list(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field,
                  const double *v, size_t n)
{
    /* MLC lists are the largest values written: formatted straight into one
     * backslash-separated value (what the DICOM core would join them into), in one
     * block, no per-value malloc. */
    char small[256 * RTB_DS_TEXT];
    char *text = n <= 256 ? small : malloc(n * RTB_DS_TEXT);
    if (!text)
        return rtb_b_fail(b, RTB_RTRECORD_E_DICOM, field, "cannot be written: out of memory");
    size_t len = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (i)
            text[len++] = '\\';
        if (rtb_rtrecord_format_ds(v[i], text + len) != 0)
            rc = rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "value %zu is not a finite number", i + 1);
        else
            len += strlen(text + len);
    }
    if (rc == 0)
        rc = put(b, ds, tag, "DS", (const char *const *)&text, n ? 1 : 0);
    if (text != small)
        free(text);
    return rc;
}

int rtb_b_is(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field, long v, int type2)
{
    if (v == RTB_RTRECORD_NO_INT)
        return type2 ? put1(b, ds, tag, "IS", "") : 0;
    if (v < -2147483647L - 1 || v > 2147483647L)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "%ld does not fit an IS (32-bit)", v);
    /* By hand: snprintf costs more than the rest of writing a number. */
    char text[16], *end = text + sizeof text - 1, *p = end;
    *end = '\0';
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return put1(b, ds, tag, "IS", p);
}

int rtb_b_datetime(rtb_builder *b, rtb_ds *ds, const char *da_tag, const char *tm_tag,
                   const char *field, const char *value, int type)
{
    char da[9], tm[14];
    int type2 = type == 2;
    if (!value || !value[0]) {
        if (type == 1)
            return rtb_b_fail(b, RTB_RTRECORD_E_MISSING, field, "is required");
        if (!type2)
            return 0;
        if (put1(b, ds, da_tag, "DA", "") != 0)
            return -1;
        return tm_tag ? put1(b, ds, tm_tag, "TM", "") : 0;
    }
    if (rtb_rtrecord_parse_datetime(value, da, tm) != 0)
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field,
                          "is not a date/time (YYYY-MM-DD[THH:MM:SS[.ffffff]]): '%s'", value);
    if (type == 1 && tm_tag && !tm[0])
        return rtb_b_fail(b, RTB_RTRECORD_E_INVALID, field, "needs a time of day: '%s'", value);
    if (put1(b, ds, da_tag, "DA", da) != 0)
        return -1;
    if (!tm_tag || (!tm[0] && !type2))
        return 0;
    return put1(b, ds, tm_tag, "TM", tm);
}

int rtb_b_item(rtb_builder *b, rtb_ds *ds, const char *tag, rtb_ds **item)
{
    rtb_dicom_error derr;
    if (rtb_ds_item_append(ds, tag, item, &derr) != 0)
        return rtb_b_dicom_fail(b, tag, &derr);
    return 0;
}
