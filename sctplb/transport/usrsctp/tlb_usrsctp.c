// C helpers around usrsctp for the Go wrapper (see usrsctp.go).
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "tlb_usrsctp.h"

#include "_cgo_export.h"

static void tlb_upcall(struct socket *so, void *arg, int flags) {
	goUpcall((uintptr_t)arg, usrsctp_get_events(so));
}

int tlb_set_upcall(struct socket *so, uintptr_t id) {
	return usrsctp_set_upcall(so, tlb_upcall, (void *)id);
}

static void tlb_debug(const char *format, ...) {
	va_list ap;
	va_start(ap, format);
	vfprintf(stderr, format, ap);
	va_end(ap);
}

void tlb_init(int debug) {
	usrsctp_init(0, NULL, debug ? tlb_debug : NULL);
}

struct socket *tlb_socket(int domain) {
	return usrsctp_socket(domain, SOCK_STREAM, IPPROTO_SCTP, NULL, NULL, 0, NULL);
}

int tlb_subscribe(struct socket *so) {
	uint16_t types[] = {SCTP_ASSOC_CHANGE, SCTP_PEER_ADDR_CHANGE, SCTP_REMOTE_ERROR,
		SCTP_SHUTDOWN_EVENT, SCTP_SEND_FAILED_EVENT};
	struct sctp_event ev;
	const int on = 1;
	unsigned i;
	if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_RECVRCVINFO, &on, sizeof(on)) < 0)
		return -1;
	if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_NODELAY, &on, sizeof(on)) < 0)
		return -1;
	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		memset(&ev, 0, sizeof(ev));
		ev.se_assoc_id = SCTP_ALL_ASSOC;
		ev.se_type = types[i];
		ev.se_on = 1;
		if (usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_EVENT, &ev, sizeof(ev)) < 0)
			return -1;
	}
	return 0;
}

int tlb_set_initmsg(struct socket *so, uint16_t ostreams, uint16_t istreams) {
	struct sctp_initmsg im;
	memset(&im, 0, sizeof(im));
	im.sinit_num_ostreams = ostreams;
	im.sinit_max_instreams = istreams;
	return usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_INITMSG, &im, sizeof(im));
}

ssize_t tlb_send(struct socket *so, const void *data, size_t len, uint16_t sid, uint32_t ppid_be) {
	struct sctp_sndinfo si;
	memset(&si, 0, sizeof(si));
	si.snd_sid = sid;
	si.snd_ppid = ppid_be;
	return usrsctp_sendv(so, data, len, NULL, 0, &si, sizeof(si), SCTP_SENDV_SNDINFO, 0);
}

// tlb_recv returns the byte count; *flags gets msg_flags, *sid/*ppid_be the
// receive info when present (*has_info).
ssize_t tlb_recv(struct socket *so, void *buf, size_t len, int *flags, uint16_t *sid, uint32_t *ppid_be, int *has_info) {
	struct sctp_rcvinfo ri;
	socklen_t infolen = sizeof(ri);
	unsigned int infotype = 0;
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	ssize_t n;
	*flags = 0;
	memset(&ri, 0, sizeof(ri));
	n = usrsctp_recvv(so, buf, len, (struct sockaddr *)&from, &fromlen, &ri, &infolen, &infotype, flags);
	*has_info = (n >= 0 && infotype == SCTP_RECVV_RCVINFO);
	*sid = ri.rcv_sid;
	*ppid_be = ri.rcv_ppid;
	return n;
}

static int tlb_sockaddr_len(const struct sockaddr *sa) {
	return sa->sa_family == AF_INET6 ? (int)sizeof(struct sockaddr_in6) : (int)sizeof(struct sockaddr_in);
}

// tlb_copy_addrs flattens the packed sockaddr list returned by getpaddrs or
// getladdrs into out (family, port, 16 address bytes per entry).
static int tlb_copy_addrs(struct sockaddr *addrs, int n, uint8_t *out, int max) {
	char *p = (char *)addrs;
	int i;
	for (i = 0; i < n && i < max; i++) {
		struct sockaddr *sa = (struct sockaddr *)p;
		uint8_t *o = out + i * 20;
		memset(o, 0, 20);
		if (sa->sa_family == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
			o[0] = 4;
			memcpy(o + 2, &s4->sin_port, 2);
			memcpy(o + 4, &s4->sin_addr, 4);
		} else if (sa->sa_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
			o[0] = 6;
			memcpy(o + 2, &s6->sin6_port, 2);
			memcpy(o + 4, &s6->sin6_addr, 16);
		}
		p += tlb_sockaddr_len(sa);
	}
	return i;
}

int tlb_paddrs(struct socket *so, int local, uint8_t *out, int max) {
	struct sockaddr *addrs = NULL;
	int n = local ? usrsctp_getladdrs(so, 0, &addrs) : usrsctp_getpaddrs(so, 0, &addrs);
	if (n <= 0)
		return n;
	n = tlb_copy_addrs(addrs, n, out, max);
	if (local)
		usrsctp_freeladdrs(addrs);
	else
		usrsctp_freepaddrs(addrs);
	return n;
}

int tlb_set_primary(struct socket *so, struct sockaddr *sa) {
	struct sctp_setprim sp;
	memset(&sp, 0, sizeof(sp));
	memcpy(&sp.ssp_addr, sa, tlb_sockaddr_len(sa));
	return usrsctp_setsockopt(so, IPPROTO_SCTP, SCTP_PRIMARY_ADDR, &sp, sizeof(sp));
}

/* SCTP_GET_NONCE_VALUES is usrsctp's (FreeBSD's) nonstandard option for an
 * association's verification tags; usrsctp.h has its struct but not its
 * number. */
#ifndef SCTP_GET_NONCE_VALUES
#define SCTP_GET_NONCE_VALUES 0x00001105
#endif

int tlb_tags(struct socket *so, uint32_t *local, uint32_t *peer) {
	struct sctp_get_nonce_values gnv;
	socklen_t len = sizeof(gnv);
	memset(&gnv, 0, sizeof(gnv));
	if (usrsctp_getsockopt(so, IPPROTO_SCTP, SCTP_GET_NONCE_VALUES, &gnv, &len) < 0) {
		return -1;
	}
	*local = gnv.gn_local_tag;
	*peer = gnv.gn_peers_tag;
	return 0;
}

/* SCTP_GET_SNDBUF_USE and struct sctp_sockstat are FreeBSD's (usrsctp
 * handles the option, usrsctp.h lacks both). */
#ifndef SCTP_GET_SNDBUF_USE
#define SCTP_GET_SNDBUF_USE 0x00001101
#endif
struct tlb_sockstat {
	sctp_assoc_t ss_assoc_id;
	uint32_t ss_total_sndbuf;
	uint32_t ss_total_recv_buf;
};

int tlb_sendq(struct socket *so, uint32_t *queued, uint32_t *unacked) {
	struct tlb_sockstat ss;
	struct sctp_status st;
	socklen_t len = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (usrsctp_getsockopt(so, IPPROTO_SCTP, SCTP_GET_SNDBUF_USE, &ss, &len) < 0)
		return -1;
	len = sizeof(st);
	memset(&st, 0, sizeof(st));
	if (usrsctp_getsockopt(so, IPPROTO_SCTP, SCTP_STATUS, &st, &len) < 0)
		return -1;
	*queued = ss.ss_total_sndbuf;
	*unacked = st.sstat_unackdata;
	return 0;
}

/* tlb_assoc_state reads the association's state (SCTP_STATUS); it fails
 * when the socket has no association (never connected, or already freed). */
int tlb_assoc_state(struct socket *so, int32_t *state) {
	struct sctp_status st;
	socklen_t len = sizeof(st);
	memset(&st, 0, sizeof(st));
	if (usrsctp_getsockopt(so, IPPROTO_SCTP, SCTP_STATUS, &st, &len) < 0)
		return -1;
	*state = st.sstat_state;
	return 0;
}

/* tlb_stats reads the stack-wide counters Stack.Close reports when
 * usrsctp_finish keeps refusing: the established gauge and how often the
 * timers that retry freeing an association or an endpoint fired. */
void tlb_stats(uint32_t *established, uint32_t *asoc_kill, uint32_t *inp_kill, uint32_t *shutdown, uint32_t *shutdown_guard) {
	struct sctpstat st;
	memset(&st, 0, sizeof(st));
	usrsctp_get_stat(&st);
	*established = st.sctps_currestab;
	*asoc_kill = st.sctps_timoassockill;
	*inp_kill = st.sctps_timoinpkill;
	*shutdown = st.sctps_timoshutdown;
	*shutdown_guard = st.sctps_timoshutdownguard;
}

/* tlb_local_port returns the socket's local port (network order read from
 * its first local address), 0 if it has none. */
int tlb_local_port(struct socket *so) {
	struct sockaddr *addrs = NULL;
	int port = 0;
	int n = usrsctp_getladdrs(so, 0, &addrs);
	if (n <= 0)
		return 0;
	if (addrs->sa_family == AF_INET)
		port = ntohs(((struct sockaddr_in *)addrs)->sin_port);
	else if (addrs->sa_family == AF_INET6)
		port = ntohs(((struct sockaddr_in6 *)addrs)->sin6_port);
	usrsctp_freeladdrs(addrs);
	return port;
}

/* tlb_port_bound says whether an endpoint of this stack still holds port:
 * 1 if binding a fresh socket to it fails with EADDRINUSE, 0 if the bind
 * works, -1 if the probe itself failed. The probe socket has no
 * association, so closing it frees it at once. */
int tlb_port_bound(uint16_t port) {
	struct sockaddr_in sin;
	struct socket *so = usrsctp_socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP, NULL, NULL, 0, NULL);
	int r;
	if (so == NULL)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(port);
	r = usrsctp_bind(so, (struct sockaddr *)&sin, sizeof(sin));
	r = r == 0 ? 0 : (errno == EADDRINUSE ? 1 : -1);
	usrsctp_close(so);
	return r;
}

/* tlb_abort ends the socket's association at once with an ABORT
 * (SCTP_ABORT send flag) while leaving the socket open, so that it can be
 * closed once usrsctp has freed the association (release.go). */
int tlb_abort(struct socket *so) {
	struct sctp_sndinfo si;
	char none = 0;
	memset(&si, 0, sizeof(si));
	si.snd_flags = SCTP_ABORT;
	return usrsctp_sendv(so, &none, 0, NULL, 0, &si, sizeof(si), SCTP_SENDV_SNDINFO, 0) < 0 ? -1 : 0;
}
