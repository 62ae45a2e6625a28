// One-time process setup for DCMTK, and the transfer syntax lists we offer.
//
// DCMTK keeps a few process-wide registries (data dictionary, codec list,
// logger). They are filled once here, under std::call_once, and only read
// afterwards, so the SCU functions running on pool threads share nothing mutable.
#include "internal.hpp"

#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace rtb {

const char *const kUncompressedXfers[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
};
const size_t kNumUncompressedXfers = sizeof kUncompressedXfers / sizeof *kUncompressedXfers;

// What the SCP accepts, preferred first: uncompressed first, so that an SCU
// offering both never has to compress for us; then whatever arrives compressed
// is taken as it is (a backup must not transcode lossy data).
const char *const kAllXfers[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionLosslessOnlyTransferSyntax,
    UID_JPEG2000Part2MulticomponentImageCompressionTransferSyntax,
    UID_MPEG2MainProfileAtMainLevelTransferSyntax,
    UID_MPEG2MainProfileAtHighLevelTransferSyntax,
    UID_MPEG4HighProfileLevel4_1TransferSyntax,
    UID_MPEG4BDcompatibleHighProfileLevel4_1TransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For2DVideoTransferSyntax,
    UID_MPEG4HighProfileLevel4_2_For3DVideoTransferSyntax,
    UID_MPEG4StereoHighProfileLevel4_2TransferSyntax,
    UID_HEVCMainProfileLevel5_1TransferSyntax,
    UID_HEVCMain10ProfileLevel5_1TransferSyntax,
};
const size_t kNumAllXfers = sizeof kAllXfers / sizeof *kAllXfers;

static std::once_flag g_once;
static rtb_dicom_error g_init_error; // written once inside call_once, read-only after
static bool g_init_ok = false;

static OFLogger::LogLevel log_level_from_env()
{
    const char *v = getenv("RTB_DCMTK_LOG");
    if (!v || !*v) return OFLogger::OFF_LOG_LEVEL;
    if (!strcmp(v, "trace")) return OFLogger::TRACE_LOG_LEVEL;
    if (!strcmp(v, "debug")) return OFLogger::DEBUG_LOG_LEVEL;
    if (!strcmp(v, "info")) return OFLogger::INFO_LOG_LEVEL;
    if (!strcmp(v, "warn")) return OFLogger::WARN_LOG_LEVEL;
    if (!strcmp(v, "error")) return OFLogger::ERROR_LOG_LEVEL;
    return OFLogger::OFF_LOG_LEVEL;
}

static void init_once()
{
    clear_error(&g_init_error);
    // Library code must not print: DCMTK logs warnings to stderr by default.
    OFLog::configure(log_level_from_env());

    if (!dcmDataDict.isDictionaryLoaded()) {
        fail(&g_init_error, RTB_DICOM_E_INTERNAL,
             "DCMTK data dictionary not loaded (is the libdcmtk17 package complete? DCMDICTPATH=%s)",
             getenv("DCMDICTPATH") ? getenv("DCMDICTPATH") : "unset");
        return;
    }
    // Decoders let rtb_ds_save() write uncompressed copies of compressed input.
    DcmRLEDecoderRegistration::registerCodecs();
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();

    // A peer that drops the connection while we write would otherwise kill the
    // whole backup run with SIGPIPE; the write error is reported as "aborted".
    // Only when nobody installed a handler: the host's choice wins.
    struct sigaction sa;
    if (sigaction(SIGPIPE, nullptr, &sa) == 0 && sa.sa_handler == SIG_DFL) {
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, nullptr);
    }
    g_init_ok = true;
}

bool ensure_init(rtb_dicom_error *err)
{
    std::call_once(g_once, init_once);
    if (g_init_ok) return true;
    if (err) *err = g_init_error;
    return false;
}

} // namespace rtb

extern "C" int rtb_dicom_init(rtb_dicom_error *err)
{
    rtb::clear_error(err);
    return rtb::ensure_init(err) ? 0 : -1;
}
