// UIDs in the "2.25.<decimal UUID>" form (PS3.5 B.2): no organisation root is
// needed, and a deterministic UID lets a re-run of a killed job produce the same
// RT record instead of a duplicate.
#include "internal.hpp"

#include <openssl/evp.h>

#include <cerrno>
#include <cstring>
#include <sys/random.h>

namespace {

// The namespace of rtbackup's name-based UUIDs. Never change it: every
// deterministic UID ever issued (and stored in archives) depends on it.
const unsigned char kNamespace[16] = {0x37, 0x01, 0x33, 0x94, 0x92, 0xba, 0x40, 0xd8,
                                      0x8e, 0xb0, 0xc6, 0x1b, 0x23, 0x59, 0x34, 0x52};

void format_uid(unsigned char b[16], unsigned version, char out[RTB_DICOM_UID_MAX])
{
    b[6] = static_cast<unsigned char>((b[6] & 0x0F) | (version << 4));
    b[8] = static_cast<unsigned char>((b[8] & 0x3F) | 0x80); // RFC 4122 variant
    unsigned __int128 v = 0;
    for (int i = 0; i < 16; i++) v = (v << 8) | b[i];
    char digits[40];
    int n = 0;
    do {
        digits[n++] = static_cast<char>('0' + static_cast<int>(v % 10));
        v /= 10;
    } while (v != 0);
    // At most 39 digits: "2.25." + 39 = 44 characters, well under 64.
    memcpy(out, "2.25.", 5);
    for (int i = 0; i < n; i++) out[5 + i] = digits[n - 1 - i];
    out[5 + n] = '\0';
}

} // namespace

using namespace rtb;

extern "C" int rtb_dicom_uid_from_names(const char *const *names, size_t count,
                                        char out[RTB_DICOM_UID_MAX], rtb_dicom_error *err)
{
    return rtb_dicom_uid_from_bytes(names, nullptr, count, out, err);
}

extern "C" int rtb_dicom_uid_from_bytes(const char *const *names, const size_t *lengths, size_t count,
                                        char out[RTB_DICOM_UID_MAX], rtb_dicom_error *err)
{
    clear_error(err);
    out[0] = '\0';
    if (count == 0 || !names) return fail(err, RTB_DICOM_E_INVALID, "a deterministic UID needs at least one name");
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), nullptr) == 1 &&
              EVP_DigestUpdate(ctx, kNamespace, sizeof kNamespace) == 1;
    for (size_t i = 0; ok && i < count; i++) {
        if (!names[i]) {
            EVP_MD_CTX_free(ctx);
            return fail(err, RTB_DICOM_E_INVALID, "UID name %zu is NULL", i + 1);
        }
        // Length-prefixing each name makes the encoding unambiguous without
        // reserving a separator character that names could contain.
        size_t len = lengths ? lengths[i] : strlen(names[i]);
        unsigned char prefix[8];
        for (int k = 0; k < 8; k++) prefix[k] = static_cast<unsigned char>((uint64_t)len >> (56 - 8 * k));
        ok = EVP_DigestUpdate(ctx, prefix, sizeof prefix) == 1 &&
             EVP_DigestUpdate(ctx, names[i], len) == 1;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    ok = ok && EVP_DigestFinal_ex(ctx, md, &len) == 1 && len >= 16;
    EVP_MD_CTX_free(ctx);
    if (!ok) return fail(err, RTB_DICOM_E_INTERNAL, "SHA-1 unavailable in OpenSSL");
    format_uid(md, 5, out);
    return 0;
}

extern "C" int rtb_dicom_uid_random(char out[RTB_DICOM_UID_MAX], rtb_dicom_error *err)
{
    clear_error(err);
    out[0] = '\0';
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return fail(err, RTB_DICOM_E_INTERNAL, "getrandom: %s", strerror(errno));
        }
        got += static_cast<size_t>(n);
    }
    format_uid(b, 4, out);
    return 0;
}

extern "C" int rtb_dicom_uid_valid(const char *s)
{
    if (!s || !*s) return 0;
    size_t len = strlen(s);
    if (len > 64) return 0;
    const char *comp = s;
    for (const char *p = s;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t clen = static_cast<size_t>(p - comp);
            if (clen == 0) return 0;
            if (clen > 1 && comp[0] == '0') return 0;
            if (*p == '\0') return 1;
            comp = p + 1;
        } else if (*p < '0' || *p > '9') {
            return 0;
        }
    }
}
