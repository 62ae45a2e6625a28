// C-ECHO: the cheapest proof that a peer is up and knows our AE title.
#include "internal.hpp"

using namespace rtb;

extern "C" int rtb_dicom_echo(const rtb_dicom_peer *peer, rtb_dicom_error *err)
{
    clear_error(err);
    Association a(peer);
    if (!a.open({{UID_VerificationSOPClass, {UID_LittleEndianExplicitTransferSyntax,
                                             UID_LittleEndianImplicitTransferSyntax}}},
                err))
        return -1;
    DIC_US status = 0;
    DcmDataset *detail = nullptr;
    OFCondition cond = DIMSE_echoUser(a.assoc(), a.next_message_id(), DIMSE_NONBLOCKING,
                                      a.dimse_timeout(), &status, &detail);
    std::unique_ptr<DcmDataset> hold(detail);
    if (cond.bad()) {
        a.mark_broken();
        return fail_cond(err, cond, "C-ECHO");
    }
    if (status != STATUS_Success) return fail_status(err, status, detail, "C-ECHO");
    a.release(err);
    return 0;
}
