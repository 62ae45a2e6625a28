// The storage SCP's shared state, between the acceptor (scp_accept.cpp), the
// hand-over of a connection to DCMTK (scp_handoff.cpp) and the per-association
// workers (scp_assoc.cpp).
//
// Threads: one acceptor, one worker per connection. The acceptor
// only accepts TCP connections and never reads from a peer; everything DICOM
// (TLS handshake, A-ASSOCIATE-RQ, DIMSE) happens on the connection's worker.
#ifndef RTB_DICOM_SCP_HPP
#define RTB_DICOM_SCP_HPP

#include "internal.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <set>
#include <thread>

class DcmTransportLayer;

namespace rtb {

// One stored instance, for --exec-on-reception (scp_exec.cpp).
struct ExecJob {
    std::string dir, file, calling_ae, called_ae, remote;
};

// Runs the reception command for each stored instance, one at a time, on a
// thread of its own: the workers only queue.
class Executor {
public:
    explicit Executor(std::vector<std::string> argv);
    ~Executor(); // finish(), if not done yet
    void finish(); // runs what is queued, then stops the thread
    void submit(ExecJob job);
    size_t ran() const { return ran_; }
    size_t failed() const { return failed_; }

private:
    void run();
    std::vector<std::string> argv_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<ExecJob> queue_;
    bool stop_ = false;
    std::atomic<size_t> ran_{0}, failed_{0};
    std::thread thread_;
};

// Empty temporary files in the output directory, made durable ahead of the stores
// that will fill them, by a thread of its own (scp_pool.cpp).
class TempPool {
public:
    TempPool(std::string dir, size_t size);
    ~TempPool(); // stops the thread and removes the files not taken
    // A ready temporary file (its path, *fd open on it), or "" when none is.
    std::string take(int *fd);

private:
    void fill();
    std::string dir_;
    size_t size_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::pair<int, std::string>> ready_;
    bool stop_ = false;
    std::thread thread_;
};

// Takes a shared lock on `dir` for as long as the SCP serves it (*lock_fd, -1 when
// the file system has no locks). When no other SCP holds one, first removes the
// temporary files an SCP stopped by a signal or a power cut left there, and returns
// how many (scp_pool.cpp).
size_t claim_dir(const std::string &dir, int *lock_fd);

} // namespace rtb

struct rtb_dicom_scp {
    // Configuration, copied at start so the caller's strings may go away.
    std::string aet, dir;
    std::vector<std::string> allow; // empty: any calling AE
    bool allow_any = true;
    rtb_dicom_stored_fn on_store = nullptr;
    void *ud = nullptr;
    int acse_timeout = 30, dimse_timeout = 60, request_timeout = 5;
    unsigned max_pdu = 116794;
    int max_associations = 8, max_per_host = 4;
    bool tls = false;
    bool sort_by_study = false;

    int listen_fd = -1;
    int port = 0;
    int wake[2] = {-1, -1}; // written by stop() to end the acceptor's poll
    std::thread acceptor;
    std::atomic<bool> stopping{false};
    std::atomic<size_t> stored{0};
    std::atomic<size_t> associations{0}; // acknowledged
    std::atomic<size_t> refused{0};      // connections turned away at accept (over a cap)
    std::atomic<size_t> rejected{0};     // A-ASSOCIATE-RQs rejected (AE titles)
    std::atomic<size_t> dropped{0};      // connections that never made an association

    // DCMTK side of the hand-over: a network without a listening socket whose
    // transport layer (plain or TLS) creates the connection for a socket we accepted.
    T_ASC_Network *net = nullptr;
    DcmTransportLayer *layer = nullptr;

    // One per accepted connection, from accept to the end of its association.
    struct Conn {
        std::thread thread;
        int fd = -1;       // handed to DCMTK, which closes it
        std::string host;  // remote IP address
        // A dup of fd, guarded by mu, for the acceptor: while the request phase
        // lasts it may shut the socket down (deadline passed, or stop), which ends
        // any blocking read (TLS handshake, a peer dribbling its request). Being
        // a dup, it never names a socket that was closed and reused meanwhile;
        // the worker closes it when the request phase ends.
        std::mutex mu;
        bool in_request = true;
        int watch_fd = -1;
        double deadline = 0; // monotonic seconds
        std::atomic<bool> done{false};
    };
    std::mutex conns_mu;
    std::list<Conn> conns;
    std::map<std::string, int> per_host; // live connections by remote address
    std::mutex callback_mu; // on_store calls never overlap
    // --sort-by-study: study directories whose name is known to be on disk.
    std::mutex study_dirs_mu;
    std::set<std::string> study_dirs;
    std::unique_ptr<rtb::Executor> executor; // --exec-on-reception, or none
    std::unique_ptr<rtb::TempPool> pool;     // temporaries made ahead (not with --sort-by-study)
    int dir_lock = -1;                       // shared lock on dir while we serve it (claim_dir)
    size_t stale_removed = 0;                // temporaries an earlier SCP left, removed at start
    size_t exec_ran = 0, exec_failed = 0;    // its counts, once it has finished
};

namespace rtb {

double mono_now();

// scp_accept.cpp: the acceptor thread's body.
void scp_accept_loop(rtb_dicom_scp *scp);
// scp_handoff.cpp: set up the hand-over network (and TLS) at start; turn an
// accepted socket into an association with its A-ASSOCIATE-RQ read. *taken
// tells whether DCMTK took the socket (it closes it then; otherwise we must).
// On failure *assoc may still be set and must be dropped and destroyed.
bool scp_handoff_init(rtb_dicom_scp *scp, const rtb_dicom_scp_config *cfg, rtb_dicom_error *err);
void scp_handoff_free(rtb_dicom_scp *scp);
OFCondition scp_receive(rtb_dicom_scp *scp, int fd, T_ASC_Association **assoc, bool *taken);
// scp_assoc.cpp: the worker: receive the request, vet it, serve the association.
void scp_worker(rtb_dicom_scp *scp, rtb_dicom_scp::Conn *conn);

// tls.cpp: configure an acceptor's TLS layer (BCP 195 profile) from cert/key/ca.
bool tls_setup_server(DcmTransportLayer *layer, const char *cert, const char *key, const char *ca,
                      bool require_client_cert, rtb_dicom_error *err);

} // namespace rtb

#endif
