/*
 * TLS client sessions (OpenSSL): contexts from Celery's ssl_* settings,
 * sessions that check the peer's name or address, and handshakes stepped
 * from an event loop or run to the end on a blocking socket.
 */
#include "util/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "loop/loop.h"

int cw_tls_parse_cert_reqs(const char *s, bool *verify)
{
	static const struct {
		const char *name;
		bool verify;
	} forms[] = {
		{"required", true}, {"CERT_REQUIRED", true}, {"optional", true},
		{"CERT_OPTIONAL", true}, {"none", false}, {"CERT_NONE", false},
	};
	for (size_t i = 0; s && i < sizeof(forms) / sizeof(forms[0]); i++)
		if (!strcasecmp(s, forms[i].name)) {
			*verify = forms[i].verify;
			return CW_OK;
		}
	return CW_EINVAL;
}

/* The reason of the oldest queued OpenSSL error (the one that started the failure). */
static const char *queued_reason(char *buf, size_t n)
{
	unsigned long e = ERR_get_error();
	if (!e)
		return NULL;
	ERR_error_string_n(e, buf, n);
	ERR_clear_error();
	return buf;
}

SSL_CTX *cw_tls_ctx_new(const struct cw_tls_opts *o, struct cw_error *err)
{
	char why[256];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx) {
		cw_error_set(err, CW_ENOMEM, "TLS: cannot create a context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* a write may be retried from another buffer address, and may be partial */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (o->verify) {
		int ok = o->ca_certs ? SSL_CTX_load_verify_locations(ctx, o->ca_certs, NULL)
				     : SSL_CTX_set_default_verify_paths(ctx);
		if (ok != 1) {
			cw_error_set(err, CW_EINVAL, "TLS: cannot load CA certificates %s: %s",
				     o->ca_certs ? o->ca_certs : "(system)",
				     queued_reason(why, sizeof(why)) ?: "unknown error");
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if (o->certfile && SSL_CTX_use_certificate_chain_file(ctx, o->certfile) != 1) {
		cw_error_set(err, CW_EINVAL, "TLS: cannot load client certificate %s: %s", o->certfile,
			     queued_reason(why, sizeof(why)) ?: "unknown error");
		goto fail;
	}
	if (o->certfile || o->keyfile) {
		const char *key = o->keyfile ? o->keyfile : o->certfile;
		if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1) {
			cw_error_set(err, CW_EINVAL, "TLS: cannot use client key %s: %s", key,
				     queued_reason(why, sizeof(why)) ?: "unknown error");
			goto fail;
		}
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

static bool is_address(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];
	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

SSL *cw_tls_session(SSL_CTX *ctx, int fd, const char *host, struct cw_error *err)
{
	SSL *ssl = SSL_new(ctx);
	bool addr = is_address(host);

	if (!ssl || SSL_set_fd(ssl, fd) != 1) {
		cw_error_set(err, CW_ENOMEM, "TLS: cannot create a session");
		SSL_free(ssl);
		return NULL;
	}
	/* SNI carries names only (RFC 6066) */
	if (!addr && SSL_set_tlsext_host_name(ssl, host) != 1)
		goto fail;
	if (SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER) {
		X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
		X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if ((addr ? X509_VERIFY_PARAM_set1_ip_asc(p, host) : SSL_set1_host(ssl, host)) != 1)
			goto fail;
	}
	SSL_set_connect_state(ssl);
	return ssl;
fail:
	cw_error_set(err, CW_EINVAL, "TLS: cannot check the certificate against '%s'", host);
	SSL_free(ssl);
	return NULL;
}

void cw_tls_error(SSL *ssl, int ret, const char *what, struct cw_error *err)
{
	char why[256];
	int e = SSL_get_error(ssl, ret);
	long vr = SSL_get_verify_result(ssl);

	if (vr != X509_V_OK) {
		/* the certificate was refused: say why in the words of X509 (issuer, name, date) */
		cw_error_set(err, CW_EIO, "%s: certificate verify failed: %s", what,
			     X509_verify_cert_error_string(vr));
		ERR_clear_error();
	} else if (e == SSL_ERROR_SSL && queued_reason(why, sizeof(why))) {
		cw_error_set(err, CW_EIO, "%s: %s", what, why);
	} else if (e == SSL_ERROR_SYSCALL) {
		cw_error_set(err, CW_EIO, "%s: %s", what, errno ? strerror(errno) : "connection closed");
		ERR_clear_error();
	} else if (e == SSL_ERROR_ZERO_RETURN) {
		cw_error_set(err, CW_EIO, "%s: connection closed", what);
	} else {
		cw_error_set(err, CW_EIO, "%s: TLS error %d", what, e);
		ERR_clear_error();
	}
}

int cw_tls_handshake(SSL *ssl, unsigned *want, struct cw_error *err)
{
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(ssl);
	if (r == 1)
		return CW_OK;
	switch (SSL_get_error(ssl, r)) {
	case SSL_ERROR_WANT_READ:
		*want = CW_READ;
		return CW_EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		*want = CW_WRITE;
		return CW_EAGAIN;
	default:
		cw_tls_error(ssl, r, "TLS handshake", err);
		return CW_EIO;
	}
}

int cw_tls_handshake_blocking(SSL *ssl, struct cw_error *err)
{
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(ssl);
	if (r == 1)
		return CW_OK;
	cw_tls_error(ssl, r, "TLS handshake", err);
	return CW_EIO;
}
