// Optional TLS for SCU associations through DCMTK's dcmtls (OpenSSL).
// Debian builds DCMTK WITH_OPENSSL; the #else branch keeps other builds honest.
#include "internal.hpp"

#include <dcmtk/dcmtls/tlslayer.h>

namespace rtb {

#ifdef WITH_OPENSSL

bool tls_attach(const rtb_dicom_peer *peer, T_ASC_Network *net, T_ASC_Parameters *params,
                void **layer_out, rtb_dicom_error *err)
{
    *layer_out = nullptr;
    if (!peer->tls_ca || !*peer->tls_ca)
        return fail(err, RTB_DICOM_E_INVALID,
                    "TLS needs a CA file to verify the peer (tls_ca)"), false;
    if (peer->tls_cert && *peer->tls_cert && (!peer->tls_key || !*peer->tls_key))
        return fail(err, RTB_DICOM_E_INVALID, "TLS certificate given without its key (tls_key)"), false;

    // initializeOpenSSL=OFTrue is idempotent in OpenSSL 1.1+ and thread-safe there.
    DcmTLSTransportLayer *layer = new DcmTLSTransportLayer(NET_REQUESTOR, nullptr, OFTrue);
    OFCondition cond = layer->setTLSProfile(TSP_Profile_BCP195_ND);
    if (cond.good()) cond = layer->activateCipherSuites();
    if (cond.good()) cond = layer->addTrustedCertificateFile(peer->tls_ca, DCF_Filetype_PEM);
    if (cond.good() && peer->tls_cert && *peer->tls_cert) {
        cond = layer->setPrivateKeyFile(peer->tls_key, DCF_Filetype_PEM);
        if (cond.good()) cond = layer->setCertificateFile(peer->tls_cert, DCF_Filetype_PEM);
        if (cond.good() && !layer->checkPrivateKeyMatchesCertificate())
            cond = makeOFCondition(OFM_dcmtls, 1, OF_error, "private key does not match certificate");
    }
    if (cond.bad()) {
        delete layer;
        return fail(err, RTB_DICOM_E_INVALID, "TLS setup failed: %s", cond.text()), false;
    }
    layer->setCertificateVerification(DCV_requireCertificate);
    cond = ASC_setTransportLayer(net, layer, 0);
    if (cond.good()) cond = ASC_setTransportLayerType(params, OFTrue);
    if (cond.bad()) {
        delete layer;
        return fail_cond(err, cond, "cannot enable TLS"), false;
    }
    *layer_out = layer;
    return true;
}

void tls_free(void *layer)
{
    delete static_cast<DcmTLSTransportLayer *>(layer);
}

// Server side (the storage SCP): our certificate and key; client certificates
// are verified against ca when one is presented, and required when asked.
bool tls_setup_server(DcmTransportLayer *base, const char *cert, const char *key, const char *ca,
                      bool require_client_cert, rtb_dicom_error *err)
{
    DcmTLSTransportLayer *layer = dynamic_cast<DcmTLSTransportLayer *>(base);
    if (!layer) return fail(err, RTB_DICOM_E_INTERNAL, "not a TLS transport layer"), false;
    OFCondition cond = layer->setTLSProfile(TSP_Profile_BCP195_ND);
    if (cond.good()) cond = layer->activateCipherSuites();
    if (cond.good() && ca && *ca) cond = layer->addTrustedCertificateFile(ca, DCF_Filetype_PEM);
    if (cond.good()) cond = layer->setPrivateKeyFile(key, DCF_Filetype_PEM);
    if (cond.good()) cond = layer->setCertificateFile(cert, DCF_Filetype_PEM);
    if (cond.good() && !layer->checkPrivateKeyMatchesCertificate())
        cond = makeOFCondition(OFM_dcmtls, 1, OF_error, "private key does not match certificate");
    if (cond.bad()) return fail(err, RTB_DICOM_E_INVALID, "TLS setup failed: %s", cond.text()), false;
    layer->setCertificateVerification(require_client_cert ? DCV_requireCertificate
                                      : (ca && *ca)       ? DCV_checkCertificate
                                                          : DCV_ignoreCertificate);
    return true;
}

#else

bool tls_attach(const rtb_dicom_peer *, T_ASC_Network *, T_ASC_Parameters *, void **layer_out,
                rtb_dicom_error *err)
{
    *layer_out = nullptr;
    return fail(err, RTB_DICOM_E_INVALID, "TLS not supported by this build"), false;
}

void tls_free(void *) {}

bool tls_setup_server(DcmTransportLayer *, const char *, const char *, const char *, bool,
                      rtb_dicom_error *err)
{
    return fail(err, RTB_DICOM_E_INVALID, "TLS not supported by this build"), false;
}

#endif

} // namespace rtb
