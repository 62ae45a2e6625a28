/* rtbackup.http.core: an HTTP server (http_server.c), an HTTP client (http_client.c),
 * and here the password hashing for the server's basic auth, and the SHA-1 that names
 * an Orthanc's resources in its REST API (rtbackup.orthanc).
 *
 * A password is stored as "pbkdf2-sha256$<iterations>$<salt>$<hash>" (standard
 * base64), PBKDF2-HMAC-SHA256 from OpenSSL's libcrypto with a random 16-byte salt.
 * The iteration count travels in the string, so old hashes keep verifying after the
 * default changes. Deriving a key is slow on purpose (a third of a second at the
 * default), so both functions run on the thread pool and the calling task yields. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "config_lua.h"
#include "http_lua.h"
#include "task.h"
#include "util.h"

#define PREFIX "pbkdf2-sha256$"
/* OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256. */
#define DEFAULT_ITERATIONS 600000
#define MIN_ITERATIONS 1000
/* A stored string is configuration, but a huge count in it would stall a pool thread. */
#define MAX_ITERATIONS 10000000
#define SALT_BYTES 16
#define HASH_BYTES 32
#define MAX_BYTES 64

typedef struct {
    char *plain;
    size_t plain_len;
    unsigned char salt[MAX_BYTES], expected[MAX_BYTES], derived[MAX_BYTES];
    size_t salt_len, hash_len;
    int iterations;
    int verify; /* 0: hash, 1: verify */
    int failed; /* libcrypto said no */
} pw_job;

static void free_job(pw_job *j)
{
    if (j->plain) {
        OPENSSL_cleanse(j->plain, j->plain_len);
        free(j->plain);
    }
    OPENSSL_cleanse(j, sizeof *j);
    free(j);
}

static void pw_work(void *data)
{
    pw_job *j = data;
    if (!j->verify && RAND_bytes(j->salt, SALT_BYTES) != 1) {
        j->failed = 1;
        return;
    }
    if (PKCS5_PBKDF2_HMAC(j->plain, (int)j->plain_len, j->salt, (int)j->salt_len, j->iterations,
                          EVP_sha256(), (int)j->hash_len, j->derived) != 1)
        j->failed = 1;
}

static int pw_done(lua_State *L, void *data)
{
    pw_job *j = data;
    if (j->failed) {
        free_job(j);
        return rtb_lua_error_raise(L, "crypto", "password hashing failed in libcrypto");
    }
    if (j->verify) {
        lua_pushboolean(L, CRYPTO_memcmp(j->derived, j->expected, j->hash_len) == 0);
    } else {
        char salt[2 * MAX_BYTES], hash[2 * MAX_BYTES];
        EVP_EncodeBlock((unsigned char *)salt, j->salt, (int)j->salt_len);
        EVP_EncodeBlock((unsigned char *)hash, j->derived, (int)j->hash_len);
        lua_pushfstring(L, PREFIX "%d$%s$%s", j->iterations, salt, hash);
    }
    free_job(j);
    return 1;
}

static pw_job *new_job(lua_State *L, const char *plain, size_t len)
{
    pw_job *j = calloc(1, sizeof *j);
    char *copy = malloc(len + 1);
    if (!j || !copy) {
        free(j);
        free(copy);
        luaL_error(L, "out of memory");
        return NULL;
    }
    memcpy(copy, plain, len);
    j->plain = copy;
    j->plain_len = len;
    return j;
}

/* A string, or the value of a secret (the stored hash is usually one). */
static const char *check_text(lua_State *L, int idx, size_t *len)
{
    const char *v = rtb_lua_secret_value(L, idx, len);
    return v ? v : luaL_checklstring(L, idx, len);
}

/* core.hash_password(plain [, iterations]) -> "pbkdf2-sha256$..." */
static int l_hash_password(lua_State *L)
{
    size_t len;
    const char *plain = check_text(L, 1, &len);
    lua_Integer iterations = luaL_optinteger(L, 2, DEFAULT_ITERATIONS);
    luaL_argcheck(L, iterations >= MIN_ITERATIONS && iterations <= MAX_ITERATIONS, 2,
                  "iterations out of range");
    pw_job *j = new_job(L, plain, len);
    j->iterations = (int)iterations;
    j->salt_len = SALT_BYTES;
    j->hash_len = HASH_BYTES;
    return rtb_task_await(L, pw_work, pw_done, j);
}

/* Standard base64 of n chars into out (at most max bytes); the byte count, or -1. */
static int decode_b64(const char *in, size_t n, unsigned char *out, size_t max)
{
    unsigned char tmp[MAX_BYTES + 3];
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof tmp)
        return -1;
    int got = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
    if (got < 0)
        return -1;
    got -= (in[n - 1] == '=') + (in[n - 2] == '=');
    if (got <= 0 || (size_t)got > max)
        return -1;
    memcpy(out, tmp, (size_t)got);
    return got;
}

/* Fills j from a stored string; -1 when it is not one of ours. */
static int parse_stored(const char *s, pw_job *j)
{
    if (strncmp(s, PREFIX, strlen(PREFIX)) != 0)
        return -1;
    s += strlen(PREFIX);
    char *end;
    long iterations = strtol(s, &end, 10);
    if (end == s || *end != '$' || iterations < 1 || iterations > MAX_ITERATIONS)
        return -1;
    const char *salt = end + 1;
    const char *dollar = strchr(salt, '$');
    if (!dollar)
        return -1;
    const char *hash = dollar + 1;
    int salt_len = decode_b64(salt, (size_t)(dollar - salt), j->salt, MAX_BYTES);
    int hash_len = decode_b64(hash, strlen(hash), j->expected, MAX_BYTES);
    if (salt_len < 8 || hash_len < 16)
        return -1;
    j->iterations = (int)iterations;
    j->salt_len = (size_t)salt_len;
    j->hash_len = (size_t)hash_len;
    return 0;
}

/* core.verify_password(stored, plain) -> boolean; a stored string that is not
 * "pbkdf2-sha256$..." is a configuration error, raised rather than read as "no". */
static int l_verify_password(lua_State *L)
{
    const char *stored = check_text(L, 1, NULL);
    size_t len;
    const char *plain = check_text(L, 2, &len);
    pw_job probe;
    if (parse_stored(stored, &probe) < 0)
        return rtb_lua_error_raise(L, "config", "the stored password hash is not "
                                                "pbkdf2-sha256$<iterations>$<salt>$<hash>");
    pw_job *j = new_job(L, plain, len);
    memcpy(j->salt, probe.salt, sizeof probe.salt);
    memcpy(j->expected, probe.expected, sizeof probe.expected);
    j->salt_len = probe.salt_len;
    j->hash_len = probe.hash_len;
    j->iterations = probe.iterations;
    j->verify = 1;
    return rtb_task_await(L, pw_work, pw_done, j);
}

/* core.sha1_hex(s) -> 40 lowercase hex digits. Not for secrets: Orthanc names a
 * resource by the SHA-1 of its DICOM identifiers, and this computes those names. */
static int l_sha1_hex(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (EVP_Digest(s, len, md, &md_len, EVP_sha1(), NULL) != 1 || md_len != 20)
        return rtb_lua_error_raise(L, "crypto", "SHA-1 failed in libcrypto");
    static const char hex[] = "0123456789abcdef";
    char out[40];
    for (unsigned int i = 0; i < md_len; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    lua_pushlstring(L, out, sizeof out);
    return 1;
}

int luaopen_rtbackup_http_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"hash_password", l_hash_password},
                                     {"verify_password", l_verify_password},
                                     {"sha1_hex", l_sha1_hex},
                                     {NULL, NULL}};
    luaL_newlib(L, funcs);
    rtb_http_open_server(L);
    rtb_http_open_client(L);
    return 1;
}
