// The storage SCP's shared state, between the acceptor (scp.cpp) and the
// per-association workers (scp_assoc.cpp).
#ifndef RTB_DICOM_SCP_HPP
#define RTB_DICOM_SCP_HPP

#include "internal.hpp"

#include <atomic>
#include <list>
#include <mutex>
#include <thread>

struct rtb_dicom_scp {
    // Configuration, copied at start so the caller's strings may go away.
    std::string aet, dir;
    std::vector<std::string> allow; // empty: any calling AE
    bool allow_any = true;
    rtb_dicom_stored_fn on_store = nullptr;
    void *ud = nullptr;
    int acse_timeout = 30, dimse_timeout = 60;
    unsigned max_pdu = 116794;
    int max_associations = 8;

    T_ASC_Network *net = nullptr;
    int listen_fd = -1;
    int port = 0;
    int wake[2] = {-1, -1}; // written by stop() to end the acceptor's poll
    std::thread acceptor;
    std::atomic<bool> stopping{false};
    std::atomic<size_t> stored{0};

    struct Worker {
        std::thread thread;
        std::atomic<bool> done{false};
    };
    std::mutex workers_mu;
    std::list<Worker> workers;
    std::mutex callback_mu; // on_store calls never overlap
};

namespace rtb {
// Serves one acknowledged association until release, abort, idle timeout or stop;
// destroys it at the end.
void scp_serve(rtb_dicom_scp *scp, T_ASC_Association *assoc, std::string calling_ae);
}

#endif
