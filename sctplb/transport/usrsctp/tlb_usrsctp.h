#ifndef TLB_USRSCTP_H
#define TLB_USRSCTP_H
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
/* SCTP_DEBUG only exposes usrsctp_sysctl_set_sctp_debug_on (the library exports it). */
#define SCTP_DEBUG 1
#include <usrsctp.h>

int tlb_set_upcall(struct socket *so, uintptr_t id);
void tlb_init(int debug);
struct socket *tlb_socket(int domain);
int tlb_subscribe(struct socket *so);
int tlb_set_initmsg(struct socket *so, uint16_t ostreams, uint16_t istreams);
ssize_t tlb_send(struct socket *so, const void *data, size_t len, uint16_t sid, uint32_t ppid_be);
ssize_t tlb_recv(struct socket *so, void *buf, size_t len, int *flags, uint16_t *sid, uint32_t *ppid_be, int *has_info);
int tlb_paddrs(struct socket *so, int local, uint8_t *out, int max);
int tlb_set_primary(struct socket *so, struct sockaddr *sa);
int tlb_abort(struct socket *so);
int tlb_tags(struct socket *so, uint32_t *local, uint32_t *peer);
int tlb_sendq(struct socket *so, uint32_t *queued, uint32_t *unacked);
int tlb_local_port(struct socket *so);
int tlb_port_bound(uint16_t port);
int tlb_assoc_state(struct socket *so, int32_t *state);
void tlb_stats(uint32_t *established, uint32_t *asoc_kill, uint32_t *inp_kill, uint32_t *shutdown, uint32_t *shutdown_guard);
#endif
