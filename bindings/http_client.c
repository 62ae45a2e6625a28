/* rtbackup.http client: core.request(method, url, opts) on libcurl's easy interface.
 *
 * For webhooks (alert_webhook): one exchange per call, run on the thread pool, so the
 * calling task yields and the loop goes on. No signals (CURLOPT_NOSIGNAL: the pool is
 * threaded), one overall timeout, TLS peers verified, http and https only, no
 * redirects unless asked. Any HTTP status is an answer, not an error: deciding that a
 * 500 means "retry" is the caller's business. Errors name the origin only
 * (scheme://host:port), never the path or query, which for webhooks often carry a
 * token. */
#include <ctype.h>
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_lua.h"
#include "http_lua.h"
#include "task.h"
#include "util.h"

#define DEFAULT_TIMEOUT_S 10.0
#define DEFAULT_MAX_RESPONSE (1024 * 1024)
#define MAX_REDIRECTS_LIMIT 10

typedef struct {
    char *data;
    size_t len, cap, limit;
    int overflow; /* more than limit arrived: the transfer was stopped */
} buffer;

typedef struct {
    char *method, *url, *body, *cafile;
    size_t body_len;
    int has_body;
    struct curl_slist *headers;
    long timeout_ms;
    long redirects;
    char origin[512];
    /* results, written by the pool thread */
    CURLcode code;
    long status;
    char errbuf[CURL_ERROR_SIZE];
    buffer response, header_lines;
} request;

static int buffer_add(buffer *b, const char *data, size_t n)
{
    if (b->len + n > b->limit) {
        b->overflow = 1;
        return -1;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    return buffer_add(arg, data, size * n) == 0 ? size * n : 0;
}

/* Keeps only the last header block: a redirect or "100 Continue" starts a new one. */
static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    buffer *b = arg;
    size_t len = size * n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
        b->len = 0;
    return buffer_add(b, data, len) == 0 ? len : 0;
}

static void free_request(request *r)
{
    free(r->method);
    free(r->url);
    free(r->body);
    free(r->cafile);
    curl_slist_free_all(r->headers);
    free(r->response.data);
    free(r->header_lines.data);
    free(r);
}

static void request_work(void *data)
{
    request *r = data;
    CURL *c = curl_easy_init();
    if (!c) {
        r->code = CURLE_FAILED_INIT;
        return;
    }
    curl_easy_setopt(c, CURLOPT_URL, r->url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, r->timeout_ms);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "rtbackup");
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (r->cafile)
        curl_easy_setopt(c, CURLOPT_CAINFO, r->cafile);
    if (r->redirects > 0) {
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, r->redirects);
        curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    }
    if (strcmp(r->method, "GET") == 0 && !r->has_body) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body ? r->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        if (strcmp(r->method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->response);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->header_lines);
    r->code = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(c);
}

static const char *error_kind(CURLcode code)
{
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return "connect_failed";
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_SHUTDOWN_FAILED:
        return "tls";
    default:
        return "http";
    }
}

/* Pushes {name = value} from the raw header lines (names lower-cased; a repeated
 * header's values joined with ", ", as RFC 9110 allows). */
static void push_headers(lua_State *L, const buffer *b)
{
    lua_newtable(L);
    if (!b->data)
        return;
    const char *p = b->data, *end = b->data + b->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon && colon > p && memcmp(p, "HTTP/", 5) != 0) {
            luaL_Buffer name;
            luaL_buffinit(L, &name);
            for (const char *q = p; q < colon; q++)
                luaL_addchar(&name, (char)tolower((unsigned char)*q));
            luaL_pushresult(&name);
            const char *v = colon + 1, *v_end = line_end;
            while (v < v_end && (*v == ' ' || *v == '\t'))
                v++;
            while (v_end > v && (v_end[-1] == '\r' || v_end[-1] == ' ' || v_end[-1] == '\t'))
                v_end--;
            lua_pushvalue(L, -1);
            if (lua_rawget(L, -3) == LUA_TSTRING) {
                lua_pushliteral(L, ", ");
                lua_pushlstring(L, v, (size_t)(v_end - v));
                lua_concat(L, 3);
            } else {
                lua_pop(L, 1);
                lua_pushlstring(L, v, (size_t)(v_end - v));
            }
            lua_rawset(L, -3);
        }
        p = eol ? eol + 1 : end;
    }
}

static int request_done(lua_State *L, void *data)
{
    request *r = data;
    if (r->code != CURLE_OK) {
        char message[CURL_ERROR_SIZE + 128];
        if (r->response.overflow)
            snprintf(message, sizeof message, "%s: the response is larger than max_response (%zu bytes)",
                     r->method, r->response.limit);
        else
            snprintf(message, sizeof message, "%s: %s", r->method,
                     r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->code));
        rtb_lua_error_push(L, r->response.overflow ? "http" : error_kind(r->code), message);
        rtb_lua_set_string(L, "peer", r->origin);
        rtb_lua_set_integer(L, "curl_code", (lua_Integer)r->code);
        free_request(r);
        return lua_error(L);
    }
    lua_createtable(L, 0, 3);
    rtb_lua_set_integer(L, "status", (lua_Integer)r->status);
    lua_pushlstring(L, r->response.data ? r->response.data : "", r->response.len);
    lua_setfield(L, -2, "body");
    push_headers(L, &r->header_lines);
    lua_setfield(L, -2, "headers");
    free_request(r);
    return 1;
}

/* scheme://host:port of url, or -1 when it is not an http(s) URL. */
static int url_origin(const char *url, char *out, size_t size)
{
    CURLU *u = curl_url();
    if (!u)
        return -1;
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = -1;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
        (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0)) {
        snprintf(out, size, "%s://%s:%s", scheme, host, port);
        rc = 0;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

static int valid_header_text(const char *s, int is_name)
{
    if (is_name && !*s)
        return 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\r' || ch == '\n' || ch == '\0' || (is_name && (ch == ':' || ch <= ' ')))
            return 0;
    }
    return 1;
}

/* A string, or the value of a secret (a webhook URL or a token usually is one). */
static const char *text_or_secret(lua_State *L, int idx)
{
    const char *v = rtb_lua_secret_value(L, idx, NULL);
    return v ? v : lua_tostring(L, idx);
}

/* core.request(method, url, {body =, headers = {name = value}, timeout = seconds,
 * cafile =, redirects = n, max_response = bytes}) -> {status, body, headers}; raises
 * {kind = "timeout" | "connect_failed" | "tls" | "http" | "config", message, peer}.
 * The URL and header values may be secrets. */
static int l_request(lua_State *L)
{
    const char *method = luaL_checkstring(L, 1);
    const char *url = rtb_lua_secret_value(L, 2, NULL);
    if (!url)
        url = luaL_checkstring(L, 2);
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    char origin[512];
    if (url_origin(url, origin, sizeof origin) < 0)
        return rtb_lua_error_raise(L, "config", "not an http or https URL");
    for (const char *m = method; *m || m == method; m++)
        if (!isupper((unsigned char)*m))
            return luaL_argerror(L, 1, "expected an HTTP method in capitals (GET, POST, ...)");
    size_t body_len = 0;
    const char *body = NULL, *cafile = NULL;
    lua_Number timeout = DEFAULT_TIMEOUT_S;
    lua_Integer redirects = 0, max_response = DEFAULT_MAX_RESPONSE;
    int has_content_type = 0;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "body");
        body = luaL_optlstring(L, -1, NULL, &body_len);
        lua_getfield(L, 3, "timeout");
        timeout = luaL_optnumber(L, -1, DEFAULT_TIMEOUT_S);
        if (!(timeout > 0 && timeout <= 86400))
            return luaL_error(L, "timeout: expected seconds, more than 0");
        lua_getfield(L, 3, "cafile");
        cafile = luaL_optstring(L, -1, NULL);
        lua_getfield(L, 3, "redirects");
        redirects = luaL_optinteger(L, -1, 0);
        if (redirects < 0 || redirects > MAX_REDIRECTS_LIMIT)
            return luaL_error(L, "redirects: expected 0 to %d", MAX_REDIRECTS_LIMIT);
        lua_getfield(L, 3, "max_response");
        max_response = luaL_optinteger(L, -1, DEFAULT_MAX_RESPONSE);
        if (max_response < 0)
            return luaL_error(L, "max_response: expected bytes, at least 0");
        /* Headers are checked before anything is allocated. */
        if (lua_getfield(L, 3, "headers") == LUA_TTABLE) {
            lua_pushnil(L);
            while (lua_next(L, -2)) {
                if (lua_type(L, -2) != LUA_TSTRING || !text_or_secret(L, -1))
                    return luaL_error(L, "headers: expected {name = value} strings");
                const char *name = lua_tostring(L, -2);
                const char *value = text_or_secret(L, -1);
                if (!valid_header_text(name, 1) || !valid_header_text(value, 0))
                    return rtb_lua_error_raise(L, "config", "header '%s': invalid name or value", name);
                if (strcasecmp(name, "Content-Type") == 0)
                    has_content_type = 1;
                lua_pop(L, 1);
            }
        } else if (!lua_isnil(L, -1)) {
            return luaL_error(L, "headers: expected a table");
        }
    }

    request *r = calloc(1, sizeof *r);
    if (!r)
        return luaL_error(L, "out of memory");
    r->method = strdup(method);
    r->url = strdup(url);
    r->cafile = cafile ? strdup(cafile) : NULL;
    r->has_body = body != NULL;
    if (body) {
        r->body = malloc(body_len + 1);
        if (r->body) {
            memcpy(r->body, body, body_len);
            r->body_len = body_len;
        }
    }
    r->timeout_ms = (long)(timeout * 1000);
    r->redirects = (long)redirects;
    r->response.limit = (size_t)max_response;
    r->header_lines.limit = 256 * 1024;
    snprintf(r->origin, sizeof r->origin, "%s", origin);
    int oom = !r->method || !r->url || (cafile && !r->cafile) || (body && !r->body);
    /* "Expect:" and "Content-Type:" with no value remove libcurl's defaults: no
     * 100-continue round trip, and no form encoding claimed for a body sent as given. */
    struct curl_slist *h = curl_slist_append(NULL, "Expect:");
    r->headers = h;
    if (h && !has_content_type && r->has_body)
        h = r->headers = curl_slist_append(r->headers, "Content-Type:");
    if (lua_istable(L, 3) && lua_getfield(L, 3, "headers") == LUA_TTABLE) {
        lua_pushnil(L);
        while (h && lua_next(L, -2)) {
            const char *value = text_or_secret(L, -1);
            lua_pushfstring(L, "%s: %s", lua_tostring(L, -2), value);
            h = curl_slist_append(r->headers, lua_tostring(L, -1));
            if (h)
                r->headers = h;
            lua_pop(L, 2);
        }
    }
    if (oom || !h) {
        free_request(r);
        return luaL_error(L, "out of memory");
    }
    return rtb_task_await(L, request_work, request_done, r);
}

void rtb_http_open_client(lua_State *L)
{
    /* Once, on the loop thread, before any pool thread uses libcurl. */
    static int initialised;
    if (!initialised) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        initialised = 1;
    }
    lua_pushcfunction(L, l_request);
    lua_setfield(L, -2, "request");
}
