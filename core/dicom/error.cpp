// Error helpers: one place that turns DCMTK conditions and DIMSE statuses into
// rtb_dicom_error, so every operation reports failures the same way.
#include "internal.hpp"

#include <dcmtk/dcmnet/cond.h>
#include <dcmtk/dcmnet/diutil.h>

#include <cstdarg>
#include <cstdio>
#include <cstring>

extern "C" const char *rtb_dicom_error_kind_name(rtb_dicom_error_kind kind)
{
    switch (kind) {
    case RTB_DICOM_OK: return "ok";
    case RTB_DICOM_E_CONNECT_FAILED: return "connect_failed";
    case RTB_DICOM_E_REJECTED: return "rejected";
    case RTB_DICOM_E_ABORTED: return "aborted";
    case RTB_DICOM_E_TIMEOUT: return "timeout";
    case RTB_DICOM_E_STATUS: return "status";
    case RTB_DICOM_E_NEGOTIATION: return "negotiation";
    case RTB_DICOM_E_PROTOCOL: return "protocol";
    case RTB_DICOM_E_IO: return "io";
    case RTB_DICOM_E_INVALID: return "invalid";
    case RTB_DICOM_E_INTERNAL: return "internal";
    }
    return "internal";
}

namespace rtb {

void copy_str(char *dst, size_t size, const char *src)
{
    if (size == 0) return;
    if (!src) src = "";
    size_t n = strlen(src);
    if (n >= size) n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

std::string trim(const std::string &s)
{
    size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) return std::string();
    size_t e = s.find_last_not_of(" \t\r\n");
    return s.substr(b, e - b + 1);
}

void clear_error(rtb_dicom_error *err)
{
    if (!err) return;
    // Fields zero and texts empty, without clearing the whole ~650-byte struct: every
    // call starts here, and a record builder makes thousands of calls.
    err->kind = RTB_DICOM_OK;
    err->status = 0;
    err->reject.result = err->reject.source = err->reject.reason = 0;
    err->message[0] = '\0';
    err->peer[0] = '\0';
}

static void vfill(rtb_dicom_error *err, rtb_dicom_error_kind kind, const char *fmt, va_list ap)
{
    err->kind = kind;
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

int fail(rtb_dicom_error *err, rtb_dicom_error_kind kind, const char *fmt, ...)
{
    if (!err) return -1;
    va_list ap;
    va_start(ap, fmt);
    vfill(err, kind, fmt, ap);
    va_end(ap);
    return -1;
}

void set_peer(rtb_dicom_error *err, const rtb_dicom_peer *peer)
{
    if (!err || !peer) return;
    snprintf(err->peer, sizeof err->peer, "%s@%s:%d", peer->called_ae ? peer->called_ae : "?",
             peer->host ? peer->host : "?", peer->port);
}

// DCMTK nests conditions ("Failed to establish association / Peer aborted /
// TCP Initialization Error: Connection refused"), and the outer code alone does
// not tell a refused connect from a timeout, so the text decides the details.
rtb_dicom_error_kind kind_of(const OFCondition &cond)
{
    const char *text = cond.text() ? cond.text() : "";
    bool timed_out = strstr(text, "timeout") || strstr(text, "timed out") ||
                     strstr(text, "Timeout");
    if (cond == DUL_ASSOCIATIONREJECTED) return RTB_DICOM_E_REJECTED;
    // A failed TLS handshake (untrusted certificate, no common cipher) means
    // the connection could not be established.
    if (cond.module() == OFM_dcmtls) return RTB_DICOM_E_CONNECT_FAILED;
    if (cond.module() == OFM_dcmnet) {
        switch (cond.code()) {
        case DULC_TCPINITERROR:
        case DULC_UNKNOWNHOST:
            return RTB_DICOM_E_CONNECT_FAILED;
        case DULC_REQUESTASSOCIATIONFAILED:
            if (strstr(text, "TCP Initialization") || strstr(text, "connect") ||
                strstr(text, "unknown host"))
                return RTB_DICOM_E_CONNECT_FAILED;
            return timed_out ? RTB_DICOM_E_TIMEOUT : RTB_DICOM_E_ABORTED;
        case DULC_READTIMEOUT:
        case DIMSEC_NODATAAVAILABLE:
            return RTB_DICOM_E_TIMEOUT;
        case DULC_PEERABORTEDASSOCIATION:
        case DULC_NETWORKCLOSED:
        case DULC_PEERREQUESTEDRELEASE:
        case DULC_TCPIOERROR:
            return timed_out ? RTB_DICOM_E_TIMEOUT : RTB_DICOM_E_ABORTED;
        case DULC_TLSERROR:
            return RTB_DICOM_E_CONNECT_FAILED;
        case DIMSEC_RECEIVEFAILED:
        case DIMSEC_READPDVFAILED:
        case DIMSEC_SENDFAILED:
            return timed_out ? RTB_DICOM_E_TIMEOUT : RTB_DICOM_E_ABORTED;
        case DIMSEC_UNEXPECTEDRESPONSE:
        case DIMSEC_UNEXPECTEDPDVTYPE:
        case DIMSEC_PARSEFAILED:
        case DIMSEC_BADMESSAGE:
        case DIMSEC_BADCOMMANDTYPE:
        case DIMSEC_UNEXPECTEDREQUEST:
            return RTB_DICOM_E_PROTOCOL;
        case DIMSEC_NOVALIDPRESENTATIONCONTEXTID:
        case DIMSEC_INVALIDPRESENTATIONCONTEXTID:
            return RTB_DICOM_E_NEGOTIATION;
        default:
            break;
        }
    }
    if (timed_out) return RTB_DICOM_E_TIMEOUT;
    if (strstr(text, "Peer aborted") || strstr(text, "network closed"))
        return RTB_DICOM_E_ABORTED;
    return RTB_DICOM_E_PROTOCOL;
}

int fail_cond(rtb_dicom_error *err, const OFCondition &cond, const char *doing)
{
    OFString text;
    DimseCondition::dump(text, cond);
    // dump() spreads nested conditions over lines; one line reads better in a log.
    std::string flat;
    for (char c : std::string(text.c_str())) flat += (c == '\n') ? ' ' : c;
    return fail(err, kind_of(cond), "%s: %s", doing, trim(flat).c_str());
}

std::string status_text(unsigned status)
{
    char buf[128];
    const char *what = "unknown status";
    if (status == 0x0000) what = "Success";
    else if (status == 0xFF00 || status == 0xFF01) what = "Pending";
    else if (status == 0xFE00) what = "Cancel";
    else if (status == 0x0001 || (status & 0xF000) == 0xB000) what = "Warning";
    else if (status == 0xA700 || status == 0xA701 || status == 0xA702) what = "Refused: Out of Resources";
    else if (status == 0xA801) what = "Refused: Move Destination unknown";
    else if (status == 0xA900) what = "Error: Identifier does not match SOP Class";
    else if ((status & 0xFF00) == 0xA900) what = "Error: Data Set does not match SOP Class";
    else if ((status & 0xF000) == 0xC000) what = "Failed: Unable to process";
    else if (status == 0x0122) what = "Refused: SOP Class not supported";
    else if (status == 0x0124) what = "Refused: Not authorized";
    else if (status == 0x0110) what = "Processing failure";
    else if (status == 0x0211) what = "Unrecognized operation";
    else if ((status & 0xF000) == 0xA000) what = "Failure";
    snprintf(buf, sizeof buf, "0x%04X (%s)", status, what);
    return buf;
}

int fail_status(rtb_dicom_error *err, unsigned status, DcmDataset *detail, const char *what)
{
    OFString comment;
    if (detail) detail->findAndGetOFString(DCM_ErrorComment, comment);
    if (err) err->status = status;
    if (!comment.empty())
        return fail(err, RTB_DICOM_E_STATUS, "%s failed with status %s: %s", what,
                    status_text(status).c_str(), comment.c_str());
    return fail(err, RTB_DICOM_E_STATUS, "%s failed with status %s", what,
                status_text(status).c_str());
}

} // namespace rtb
