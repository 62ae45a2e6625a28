// The storage SCP's acceptor: it accepts TCP connections and nothing else.
//
// It never reads from a peer, so no peer can stall it: a connection within the
// caps (max_associations overall, max_per_host per remote address) goes to a
// worker thread of its own, which reads the A-ASSOCIATE-RQ with the short
// request timeout; one over a cap is refused on the spot. The acceptor also
// keeps the request deadline: a connection still in its request phase when
// the deadline passes (a silent TLS client, a peer dribbling its request) is
// shut down, which ends whatever read its worker is blocked in.
#include "scp.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace rtb {

namespace {

// A refused connection: we said no and shut our side; we read what the peer
// still sends (its A-ASSOCIATE-RQ) until it closes, so that closing does not
// reset the connection before the peer has read our answer.
struct Closing {
    int fd;
    double deadline;
};
const size_t kMaxClosing = 64;      // beyond that, refused connections are closed at once
const double kClosingLinger = 2.0;  // seconds a refused peer gets to read our answer

// A-ASSOCIATE-RJ (PS3.8 9.3.4): rejected-transient (2), source DICOM UL service
// provider, presentation related (3), reason local-limit-exceeded (2). Ten bytes
// into a fresh socket's empty send buffer: the write cannot block.
const unsigned char kRejectPdu[10] = {0x03, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x02, 0x03, 0x02};

std::string host_of(const struct sockaddr_storage &addr)
{
    char buf[INET6_ADDRSTRLEN] = "";
    if (addr.ss_family == AF_INET)
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in *>(&addr)->sin_addr, buf, sizeof buf);
    else if (addr.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6 *>(&addr)->sin6_addr, buf, sizeof buf);
    return buf;
}

void reap(rtb_dicom_scp *scp)
{
    std::lock_guard<std::mutex> lock(scp->conns_mu);
    for (auto it = scp->conns.begin(); it != scp->conns.end();) {
        if (it->done) {
            it->thread.join();
            auto h = scp->per_host.find(it->host);
            if (h != scp->per_host.end() && --h->second <= 0) scp->per_host.erase(h);
            it = scp->conns.erase(it);
        } else {
            ++it;
        }
    }
}

void refuse(rtb_dicom_scp *scp, int fd, std::vector<Closing> &closing)
{
    scp->refused++;
    // On a TLS port we cannot answer in DICOM before a handshake we will not do.
    if (!scp->tls) (void)!send(fd, kRejectPdu, sizeof kRejectPdu, MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(fd, SHUT_WR);
    if (closing.size() >= kMaxClosing) {
        close(fd);
        return;
    }
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    closing.push_back({fd, mono_now() + kClosingLinger});
}

// Drains a refused connection; true once it can be closed.
bool drain(int fd)
{
    char buf[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) continue;
        return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR));
    }
    return false;
}

void start_worker(rtb_dicom_scp *scp, int fd, const std::string &host, std::vector<Closing> &closing)
{
    std::lock_guard<std::mutex> lock(scp->conns_mu);
    int &count = scp->per_host[host];
    if (scp->conns.size() >= static_cast<size_t>(scp->max_associations) || count >= scp->max_per_host) {
        if (count == 0) scp->per_host.erase(host);
        refuse(scp, fd, closing);
        return;
    }
    int watch = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (watch < 0) {
        if (count == 0) scp->per_host.erase(host);
        refuse(scp, fd, closing);
        return;
    }
    scp->conns.emplace_back();
    rtb_dicom_scp::Conn *c = &scp->conns.back();
    c->fd = fd;
    c->host = host;
    c->watch_fd = watch;
    c->deadline = mono_now() + scp->request_timeout;
    try {
        c->thread = std::thread([scp, c] { scp_worker(scp, c); });
    } catch (...) {
        // No thread to be had: the connection is refused like any over the caps.
        close(watch);
        scp->conns.pop_back();
        if (count == 0) scp->per_host.erase(host);
        refuse(scp, fd, closing);
        return;
    }
    count++;
}

void accept_pending(rtb_dicom_scp *scp, std::vector<Closing> &closing)
{
    // A bounded batch per wake-up, so the other duties of the loop go on under a flood.
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof addr;
        // Blocking sockets for DCMTK; close-on-exec so that programs we run
        // (--exec-on-reception) inherit no connection.
        int fd = accept4(scp->listen_fd, reinterpret_cast<sockaddr *>(&addr), &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return; // EAGAIN: nothing more; EMFILE and the like: try again on the next round
        }
        if (fd == 0) { // DCMTK takes an external socket 0 for "none"
            int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
            close(fd);
            if (moved < 0) continue;
            fd = moved;
        }
        start_worker(scp, fd, host_of(addr), closing);
    }
}

// Shuts down connections whose request phase outlived its deadline; returns
// the milliseconds until the next deadline (at most 1000).
int keep_deadlines(rtb_dicom_scp *scp)
{
    double now = mono_now(), next = now + 1.0;
    std::lock_guard<std::mutex> lock(scp->conns_mu);
    for (auto &c : scp->conns) {
        std::lock_guard<std::mutex> cl(c.mu);
        if (!c.in_request || c.watch_fd < 0) continue;
        if (c.deadline <= now) {
            shutdown(c.watch_fd, SHUT_RDWR);
            c.deadline = now + 3600; // once is enough; the worker ends it
        } else if (c.deadline < next) {
            next = c.deadline;
        }
    }
    int ms = static_cast<int>((next - now) * 1000) + 1;
    return ms < 1 ? 1 : (ms > 1000 ? 1000 : ms);
}

} // namespace

void scp_accept_loop(rtb_dicom_scp *scp)
{
    std::vector<Closing> closing;
    std::vector<struct pollfd> fds;
    while (!scp->stopping) {
        int timeout = keep_deadlines(scp);
        fds.clear();
        fds.push_back({scp->listen_fd, POLLIN, 0});
        fds.push_back({scp->wake[0], POLLIN, 0});
        for (const Closing &c : closing) fds.push_back({c.fd, POLLIN, 0});
        int n = poll(fds.data(), fds.size(), timeout);
        if (n < 0 && errno != EINTR) break;
        if (scp->stopping || (fds[1].revents & POLLIN)) break;
        double now = mono_now();
        std::vector<Closing> still;
        for (size_t i = 0; i < closing.size(); i++) {
            bool ready = n > 0 && fds[i + 2].revents != 0;
            if ((ready && drain(closing[i].fd)) || closing[i].deadline <= now) close(closing[i].fd);
            else still.push_back(closing[i]);
        }
        closing.swap(still);
        reap(scp);
        if (n > 0 && (fds[0].revents & POLLIN)) accept_pending(scp, closing);
    }
    for (const Closing &c : closing) close(c.fd);
}

} // namespace rtb
