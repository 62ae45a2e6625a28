/* Shared inside core/rtrecord only: the builder's state, value formatting and
 * the checked element setters every module writer uses. */
#ifndef RTB_RTRECORD_INTERNAL_H
#define RTB_RTRECORD_INTERNAL_H

#include <stdarg.h>

#include "rtrecord.h"

/* ---- values (values.c) ------------------------------------------------------- */

#define RTB_DS_TEXT 17 /* a DS value: 16 characters + NUL */

/* Shortest text for v that fits a DS (16 characters) and, where 16 characters
 * allow it, reads back as exactly v. 0, or -1 for NaN/infinity. */
int rtb_rtrecord_format_ds(double v, char out[RTB_DS_TEXT]);

/* Date/time text (ISO or DICOM form) -> DA "YYYYMMDD" and TM "HHMMSS[.ffffff]"
 * ("" when there is no time part). 0, or -1 if the text is not a valid date/time. */
int rtb_rtrecord_parse_datetime(const char *text, char da[9], char tm[14]);

/* 1 if s is valid UTF-8 (ASCII included). */
int rtb_rtrecord_utf8_valid(const char *s);

/* DICOM limits the text VRs in characters, not bytes (PS3.5 6.2): the characters
 * of the first len bytes of UTF-8 s, and the bytes of its first `chars` characters. */
size_t rtb_rtrecord_utf8_chars(const char *s, size_t len);
size_t rtb_rtrecord_utf8_prefix(const char *s, size_t len, size_t chars);

/* ---- the builder ---------------------------------------------------------------- */

typedef struct {
    rtb_rtrecord_error *err;
    rtb_rtrecord_notes *notes; /* text cut to fit, said to the caller; may be NULL */
    int non_ascii;   /* some text was not ASCII: Specific Character Set needed */
    char path[96];   /* field path of the element being written, "beams[2]" */
} rtb_builder;

/* Fails with code; the message is "<path>.<field> " + the formatted rest. */
int rtb_b_fail(rtb_builder *b, rtb_rtrecord_error_code code, const char *field, const char *fmt,
               ...) __attribute__((format(printf, 4, 5)));
int rtb_b_dicom_fail(rtb_builder *b, const char *tag, const rtb_dicom_error *derr);

/* What to do with text longer than its VR allows. */
typedef enum { RTB_TEXT_STRICT, RTB_TEXT_CLIP } rtb_text_policy;

/* Text element (LO, SH, ST, LT, CS, UI, ...). NULL/"" gives an empty value
 * when `type2` (presence required), and nothing otherwise. */
int rtb_b_text(rtb_builder *b, rtb_ds *ds, const char *tag, const char *vr, const char *field,
               const char *value, int type2, rtb_text_policy policy);
/* Type 1 text: absent -> "<path>.<field> is required". */
int rtb_b_text1(rtb_builder *b, rtb_ds *ds, const char *tag, const char *vr, const char *field,
                const char *value);
/* A defined term. Outside `terms`: error if type == 1, empty if 2, absent if 3.
 * *written receives the term written ("" if none). */
int rtb_b_term(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field, const char *value,
               const char *const *terms, int type, const char **written);
/* Person name from components. */
int rtb_b_name(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field,
               const rtb_rtrecord_name *name, int type2);
/* DS / IS values. Absent (NaN / NO_INT): empty when type2, nothing otherwise. */
int rtb_b_ds(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field, double v, int type2);
/* An FL value (Type 3: NaN writes nothing). */
int rtb_b_fl(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field, double v);
int rtb_b_ds_list(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field,
                  const double *v, size_t n);
int rtb_b_is(rtb_builder *b, rtb_ds *ds, const char *tag, const char *field, long v, int type2);
/* DA + TM pair from one date/time text. type 1: both required; 2: both
 * present, empty if unknown; 3: written when given. */
int rtb_b_datetime(rtb_builder *b, rtb_ds *ds, const char *da_tag, const char *tm_tag,
                   const char *field, const char *value, int type);
int rtb_b_item(rtb_builder *b, rtb_ds *ds, const char *tag, rtb_ds **item);

/* Writes the Treatment Session Beam Sequence (session.c). */
int rtb_rtrecord_write_beams(rtb_builder *b, rtb_ds *ds, const rtb_rtrecord_input *in);

#endif
