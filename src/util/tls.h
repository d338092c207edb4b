/*
 * TLS client sessions over sockets the caller owns (OpenSSL): a context
 * from Celery's ssl_* settings, a session with SNI and host name or IP
 * address verification, a handshake that can be stepped without blocking.
 * Used by the Redis transport (rediss://, from the event loop) and the Redis
 * result backend (blocking, in children); hiredis 0.14 has no TLS of its own.
 */
#ifndef CW_TLS_H
#define CW_TLS_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "util/err.h"

/* Celery's ssl_cert_reqs / ssl_ca_certs / ssl_certfile / ssl_keyfile. */
struct cw_tls_opts {
	const char *ca_certs;   /* PEM file of trusted CAs; NULL = the system's */
	const char *certfile;   /* client certificate (PEM); NULL = none */
	const char *keyfile;    /* its private key; NULL = in certfile */
	bool verify;            /* CERT_REQUIRED/CERT_OPTIONAL: chain and host; CERT_NONE: neither */
};

/*
 * "required" / "CERT_REQUIRED", "optional" / "CERT_OPTIONAL", "none" /
 * "CERT_NONE" (kombu's URL form and Python's names) -> *verify; CW_EINVAL
 * for anything else.
 */
int cw_tls_parse_cert_reqs(const char *s, bool *verify) CW_MUST_CHECK;
/* A client context; NULL with a message (unreadable CA file, key not matching...). */
SSL_CTX *cw_tls_ctx_new(const struct cw_tls_opts *o, struct cw_error *err);
/*
 * A client session on the connected socket fd for host: SNI when host is a
 * name, and, when the context verifies, the certificate must name host (a
 * DNS SAN, or an IP SAN when host is an address).  NULL with a message.
 */
SSL *cw_tls_session(SSL_CTX *ctx, int fd, const char *host, struct cw_error *err);
/*
 * One step of the handshake: CW_OK when done; CW_EAGAIN with *want set to
 * CW_READ or CW_WRITE (loop/loop.h values) to wait for; CW_EIO with a
 * message saying why (for a refused certificate, what was wrong with it).
 */
int cw_tls_handshake(SSL *ssl, unsigned *want, struct cw_error *err);
/* The handshake to the end on a blocking socket (its SO_RCVTIMEO/SO_SNDTIMEO bound it). */
int cw_tls_handshake_blocking(SSL *ssl, struct cw_error *err);
/* Describe a failed SSL_* call (ret its return value) as "what: reason". */
void cw_tls_error(SSL *ssl, int ret, const char *what, struct cw_error *err);

#endif
