/*
 * Storage: whole-object reads and writes for local files, http(s) and S3.
 *
 * Local paths are confined to the configured roots: a path is first cleaned
 * lexically ("." and ".." folded), then canonicalised with realpath(3) and
 * must equal a canonical root or lie below it.  A missing file is reported as
 * CW_ENOTFOUND only when its deepest existing ancestor is inside a root, so
 * nothing about the rest of the file system leaks through error codes.
 *
 * Network transfers use one libcurl easy handle per call.  S3 requests are
 * signed by libcurl's SigV4 (CURLOPT_AWS_SIGV4); curl 7.88 does not send
 * x-amz-content-sha256 by itself, so we hash the payload with libcrypto and
 * add the header, which curl then also uses as the signed payload hash.
 *
 * Error messages never carry credentials: URLs are shown without their
 * password, query and fragment, and curl's own messages are scrubbed of the
 * secrets handed to it.
 */
#include "storage/storage.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cw_build.h"
#include "util/url.h"

#if LIBCURL_VERSION_NUM < 0x074b00
#error "libcurl >= 7.75 is needed (CURLOPT_AWS_SIGV4)"
#endif

#define DEFAULT_MAX_DOWNLOAD ((size_t)256 << 20)
#define DEFAULT_TIMEOUT 60.0
#define DEFAULT_REDIRECTS 5
#define ERRBODY_MAX 16384          /* bytes of an error response kept to find the S3 Code */
#define MSG_URL_MAX 160            /* a URL inside an error message */
#define USER_AGENT "cworker/" CW_VERSION

/* ---------------------------------------------------------------- helpers */

/* Growable byte buffer, always NUL-terminated once non-empty. */
struct buf {
	unsigned char *p;
	size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
	size_t need, cap;
	unsigned char *p;

	if (extra > SIZE_MAX - 1 - b->len)
		return CW_ENOMEM;
	need = b->len + extra + 1;
	if (need <= b->cap)
		return CW_OK;
	cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	p = realloc(b->p, cap);
	if (!p)
		return CW_ENOMEM;
	b->p = p;
	b->cap = cap;
	return CW_OK;
}

static int buf_add(struct buf *b, const void *d, size_t n)
{
	if (buf_reserve(b, n))
		return CW_ENOMEM;
	memcpy(b->p + b->len, d, n);
	b->len += n;
	b->p[b->len] = 0;
	return CW_OK;
}

/* Hand the buffer to the caller as a NUL-terminated block (an empty one too). */
static int buf_take(struct buf *b, unsigned char **data, size_t *len)
{
	if (!b->p) {
		b->p = malloc(1);
		if (!b->p)
			return CW_ENOMEM;
		b->p[0] = 0;
	}
	*data = b->p;
	*len = b->len;
	b->p = NULL;
	b->len = b->cap = 0;
	return CW_OK;
}

static char *str_cat3(const char *a, const char *b, const char *c)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
	char *s = malloc(la + lb + lc + 1);

	if (!s)
		return NULL;
	memcpy(s, a, la);
	memcpy(s + la, b, lb);
	memcpy(s + la + lb, c, lc + 1);
	return s;
}

static size_t conf_max(const struct cw_storage_conf *c)
{
	return c && c->max_download ? c->max_download : DEFAULT_MAX_DOWNLOAD;
}

static double conf_timeout(const struct cw_storage_conf *c)
{
	if (!c || !(c->timeout > 0))
		return DEFAULT_TIMEOUT;
	return c->timeout < 1e6 ? c->timeout : 1e6;
}

/* 0 = default; a negative value turns redirects off. */
static long conf_redirects(const struct cw_storage_conf *c)
{
	if (!c || !c->max_redirects)
		return DEFAULT_REDIRECTS;
	return c->max_redirects < 0 ? 0 : c->max_redirects;
}

static const char *nonempty(const char *s)
{
	return s && *s ? s : NULL;
}

/* A URL fit for a message: no query or fragment (pre-signed URLs carry tokens there),
 * password replaced by "**". */
static void url_for_msg(const char *url, char *out, size_t outsz)
{
	char tmp[512];
	size_t n = strcspn(url, "?#");

	snprintf(tmp, sizeof(tmp), "%.*s%s", (int)(n < 400 ? n : 400), url,
		 url[n] ? "?..." : (n >= 400 ? "..." : ""));
	cw_url_redact(tmp, out, outsz);
}

/* Replace every occurrence of secret in msg by "**" (secrets of 3+ bytes only). */
static void scrub(char *msg, const char *secret)
{
	size_t sl = secret ? strlen(secret) : 0;
	char *p;

	if (sl < 3)
		return;
	while ((p = strstr(msg, secret))) {
		p[0] = '*';
		p[1] = '*';
		memmove(p + 2, p + sl, strlen(p + sl) + 1);
	}
}

enum src_kind { SRC_LOCAL, SRC_FILE, SRC_HTTP, SRC_S3, SRC_UNSUPPORTED };

/* scheme "://" decides; anything without it is a local path (colons included). */
static enum src_kind classify(const char *s)
{
	size_t n = 0;

	if (!isalpha((unsigned char)s[0]))
		return SRC_LOCAL;
	while (isalnum((unsigned char)s[n]) || s[n] == '+' || s[n] == '-' || s[n] == '.')
		n++;
	if (strncmp(s + n, "://", 3))
		return SRC_LOCAL;
	if (n == 4 && !strncasecmp(s, "file", 4))
		return SRC_FILE;
	if ((n == 4 && !strncasecmp(s, "http", 4)) || (n == 5 && !strncasecmp(s, "https", 5)))
		return SRC_HTTP;
	if (n == 2 && !strncasecmp(s, "s3", 2))
		return SRC_S3;
	return SRC_UNSUPPORTED;
}

static int unsupported(const char *s, struct cw_error *err)
{
	size_t n = strcspn(s, ":");

	cw_error_set(err, CW_EINVAL, "unsupported scheme '%.*s' (use a path, file://, "
		     "http(s):// or s3://)", (int)(n < 32 ? n : 32), s);
	return CW_EINVAL;
}

/* ------------------------------------------------------------ local paths */

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = tolower(ch);
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* file:///abs or file://localhost/abs -> "/abs", percent-decoded. */
static int file_url_path(const char *url, char **out, struct cw_error *err)
{
	const char *p = url + 7, *end;
	char *s, *o;

	if (!strncasecmp(p, "localhost/", 10))
		p += 9;
	if (*p != '/') {
		cw_error_set(err, CW_EINVAL, "file URL must be file:///absolute/path");
		return CW_EINVAL;
	}
	end = p + strlen(p);
	s = malloc((size_t)(end - p) + 1);
	if (!s) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	for (o = s; p < end; p++) {
		if (*p == '%') {
			int hi = hexval((unsigned char)p[1]);
			int lo = hi < 0 ? -1 : hexval((unsigned char)p[2]);

			if (lo < 0 || (hi == 0 && lo == 0)) {
				free(s);
				cw_error_set(err, CW_EINVAL, "file URL has a bad %%-escape");
				return CW_EINVAL;
			}
			*o++ = (char)(hi * 16 + lo);
			p += 2;
		} else {
			*o++ = *p;
		}
	}
	*o = 0;
	*out = s;
	return CW_OK;
}

/* Fold "//", "." and ".." in an absolute path ("/.." stays "/"). */
static char *lexical_clean(const char *abs)
{
	size_t n = strlen(abs);
	char *out = malloc(n + 2);
	size_t o = 0;
	const char *p = abs;

	if (!out)
		return NULL;
	while (*p) {
		const char *q;
		size_t l;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		q = p + strcspn(p, "/");
		l = (size_t)(q - p);
		if (l == 1 && p[0] == '.') {
			/* skip */
		} else if (l == 2 && p[0] == '.' && p[1] == '.') {
			while (o > 0 && out[o - 1] != '/')
				o--;
			if (o > 0)
				o--;
		} else {
			out[o++] = '/';
			memcpy(out + o, p, l);
			o += l;
		}
		p = q;
	}
	if (!o)
		out[o++] = '/';
	out[o] = 0;
	return out;
}

struct roots {
	char **v;      /* canonical roots; NULL where a root does not resolve */
	size_t n;
};

static void roots_free(struct roots *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->v[i]);
	free(r->v);
	r->v = NULL;
	r->n = 0;
}

static int roots_load(const struct cw_storage_conf *c, struct roots *r, struct cw_error *err)
{
	size_t n = 0, ok = 0;

	r->v = NULL;
	r->n = 0;
	while (c && c->roots && c->roots[n])
		n++;
	if (!n) {
		cw_error_set(err, CW_EINVAL, "local paths are disabled (no storage roots)");
		return CW_EINVAL;
	}
	r->v = calloc(n, sizeof(*r->v));
	if (!r->v) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		return CW_ENOMEM;
	}
	r->n = n;
	for (size_t i = 0; i < n; i++) {
		r->v[i] = realpath(c->roots[i], NULL);
		if (r->v[i])
			ok++;
		else if (errno == ENOMEM)
			goto nomem;
	}
	if (!ok) {
		roots_free(r);
		cw_error_set(err, CW_EINVAL, "no storage root exists");
		return CW_EINVAL;
	}
	return CW_OK;
nomem:
	roots_free(r);
	cw_error_set(err, CW_ENOMEM, "out of memory");
	return CW_ENOMEM;
}

/* Length of the canonical root containing canonical path p, or -1. */
static long inside_roots(const struct roots *r, const char *p)
{
	for (size_t i = 0; i < r->n; i++) {
		const char *root = r->v[i];
		size_t rl;

		if (!root)
			continue;
		if (!strcmp(root, "/"))
			return 0;
		rl = strlen(root);
		if (!strncmp(p, root, rl) && (p[rl] == 0 || p[rl] == '/'))
			return (long)rl;
	}
	return -1;
}

static int outside(const char *spec, struct cw_error *err)
{
	cw_error_set(err, CW_EINVAL, "%.200s: outside the storage roots", spec);
	return CW_EINVAL;
}

/*
 * Resolve spec (path or file:// URL) for reading or writing.  *out is the canonical path;
 * for writes its missing tail (directories and file name) is appended to the canonical
 * deepest existing ancestor.  *root_len is the length of the containing root's prefix.
 */
static int resolve_local(const struct cw_storage_conf *c, const char *spec, bool for_write,
			 char **out, size_t *root_len, struct cw_error *err)
{
	struct roots roots;
	char *path = NULL, *abs = NULL, *norm = NULL, *rp = NULL, *anc = NULL;
	long rl;
	int rc;

	*out = NULL;
	if (!spec || !*spec) {
		cw_error_set(err, CW_EINVAL, "empty path");
		return CW_EINVAL;
	}
	if (classify(spec) == SRC_FILE) {
		rc = file_url_path(spec, &path, err);
		if (rc)
			return rc;
	} else if (classify(spec) != SRC_LOCAL) {
		cw_error_set(err, CW_EINVAL, "%.200s: not a local path", spec);
		return CW_EINVAL;
	}
	rc = roots_load(c, &roots, err);
	if (rc) {
		free(path);
		return rc;
	}
	if (!path)
		path = strdup(spec);
	if (!path)
		goto nomem;
	if (path[0] == '/') {
		abs = path;
		path = NULL;
	} else {
		if (!roots.v[0]) {
			cw_error_set(err, CW_EINVAL, "%.200s: relative path but the first storage "
				     "root does not exist", spec);
			rc = CW_EINVAL;
			goto out;
		}
		abs = str_cat3(roots.v[0], "/", path);
		if (!abs)
			goto nomem;
	}
	norm = lexical_clean(abs);
	if (!norm)
		goto nomem;
	if (for_write && !strcmp(norm, "/")) {
		cw_error_set(err, CW_EINVAL, "%.200s: not a file path", spec);
		rc = CW_EINVAL;
		goto out;
	}

	rp = realpath(norm, NULL);
	if (rp) {
		rl = inside_roots(&roots, rp);
		if (rl < 0) {
			rc = outside(spec, err);
			goto out;
		}
		*root_len = (size_t)rl;
		*out = rp;
		rp = NULL;
		rc = CW_OK;
		goto out;
	}
	if (errno == ENOMEM)
		goto nomem;
	if (errno != ENOENT && errno != ENOTDIR) {
		int e = errno;

		cw_error_set(err, e == EACCES ? CW_EIO : CW_EINVAL, "%.200s: %s", spec,
			     strerror(e));
		rc = e == EACCES ? CW_EIO : CW_EINVAL;
		goto out;
	}

	/* Missing: find the deepest existing ancestor; it decides inside/outside. */
	anc = strdup(norm);
	if (!anc)
		goto nomem;
	for (;;) {
		struct stat st;
		char *slash;

		if (!lstat(anc, &st)) {
			/* exists but does not resolve: a dangling symlink */
			cw_error_set(err, CW_EINVAL, "%.200s: dangling symlink on the path", spec);
			rc = CW_EINVAL;
			goto out;
		}
		slash = strrchr(anc, '/');
		if (slash == anc)
			slash[1] = 0;
		else
			*slash = 0;
		rp = realpath(anc, NULL);
		if (rp)
			break;
		if (errno == ENOMEM)
			goto nomem;
		if (errno != ENOENT && errno != ENOTDIR) {
			int e = errno;

			cw_error_set(err, e == EACCES ? CW_EIO : CW_EINVAL, "%.200s: %s", spec,
				     strerror(e));
			rc = e == EACCES ? CW_EIO : CW_EINVAL;
			goto out;
		}
	}
	rl = inside_roots(&roots, rp);
	if (rl < 0) {
		rc = outside(spec, err);
		goto out;
	}
	if (!for_write) {
		cw_error_set(err, CW_ENOTFOUND, "%.200s: no such file", spec);
		rc = CW_ENOTFOUND;
		goto out;
	}
	/* canonical ancestor + the missing tail of the cleaned path */
	*out = str_cat3(strcmp(rp, "/") ? rp : "", norm + (strcmp(anc, "/") ? strlen(anc) : 0), "");
	if (!*out)
		goto nomem;
	*root_len = (size_t)rl;
	rc = CW_OK;
	goto out;

nomem:
	cw_error_set(err, CW_ENOMEM, "out of memory");
	rc = CW_ENOMEM;
out:
	free(path);
	free(abs);
	free(norm);
	free(rp);
	free(anc);
	roots_free(&roots);
	return rc;
}

int cw_storage_local_path(const struct cw_storage_conf *c, const char *path, bool for_write,
			  char **out, struct cw_error *err)
{
	size_t root_len;

	return resolve_local(c, path, for_write, out, &root_len, err);
}

static int local_get(const struct cw_storage_conf *c, const char *src, unsigned char **data,
		     size_t *len, struct cw_error *err)
{
	size_t max = conf_max(c);
	struct buf b = { 0 };
	struct stat st;
	size_t root_len;
	char *path;
	int fd, rc;

	rc = resolve_local(c, src, false, &path, &root_len, err);
	if (rc)
		return rc;
	/* canonical path: O_NOFOLLOW catches a symlink swapped in since; O_NONBLOCK a FIFO */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	free(path);
	if (fd < 0) {
		int e = errno;

		rc = e == ENOENT ? CW_ENOTFOUND : e == ELOOP ? CW_EINVAL : CW_EIO;
		cw_error_set(err, rc, "%.200s: %s", src, strerror(e));
		return rc;
	}
	if (fstat(fd, &st)) {
		cw_error_set(err, CW_EIO, "%.200s: %s", src, strerror(errno));
		rc = CW_EIO;
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		cw_error_set(err, CW_EINVAL, "%.200s: not a regular file", src);
		rc = CW_EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > (uint64_t)max)
		goto limit;
	if (buf_reserve(&b, (size_t)st.st_size ? (size_t)st.st_size : 4096))
		goto nomem;
	for (;;) {
		/* read into the sized buffer; once full, probe for EOF (or growth) */
		unsigned char probe[8192];
		bool room = b.len + 1 < b.cap;
		ssize_t r = room ? read(fd, b.p + b.len, b.cap - 1 - b.len) :
				   read(fd, probe, sizeof(probe));

		if (r < 0) {
			if (errno == EINTR)
				continue;
			cw_error_set(err, CW_EIO, "%.200s: read failed: %s", src, strerror(errno));
			rc = CW_EIO;
			goto out;
		}
		if (!r)
			break;
		if (room)
			b.len += (size_t)r;
		else if (buf_add(&b, probe, (size_t)r))
			goto nomem;
		if (b.len > max)
			goto limit;
	}
	b.p[b.len] = 0;
	rc = buf_take(&b, data, len);
	if (rc)
		goto nomem;
	goto out;

limit:
	cw_error_set(err, CW_ELIMIT, "%.200s: larger than max_download (%zu bytes)", src, max);
	rc = CW_ELIMIT;
	goto out;
nomem:
	cw_error_set(err, CW_ENOMEM, "out of memory");
	rc = CW_ENOMEM;
out:
	free(b.p);
	close(fd);
	return rc;
}

/* mkdir -p for the components of path's directory that lie below the root prefix. */
static int make_parents(char *path, size_t root_len, const char *spec, struct cw_error *err)
{
	char *last = strrchr(path, '/');

	for (char *s = path + root_len + 1; s <= last; s++) {
		struct stat st;

		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(path, 0777) && errno != EEXIST) {
			cw_error_set(err, CW_EIO, "%.200s: cannot create directory: %s", spec,
				     strerror(errno));
			*s = '/';
			return CW_EIO;
		}
		if (lstat(path, &st) || !S_ISDIR(st.st_mode)) {
			cw_error_set(err, CW_EINVAL, "%.200s: a parent is not a directory", spec);
			*s = '/';
			return CW_EINVAL;
		}
		*s = '/';
	}
	return CW_OK;
}

static int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return -1;
	if (fsync(fd) && errno != EINVAL && errno != EROFS)
		rc = -1;
	close(fd);
	return rc;
}

static int local_put(const struct cw_storage_conf *c, const char *dst, const void *data,
		     size_t len, struct cw_error *err)
{
	const unsigned char *p = data;
	char *path, *tmp = NULL, *slash;
	mode_t mode = 0644;
	size_t root_len, done = 0;
	struct stat st;
	int fd = -1, rc;

	rc = resolve_local(c, dst, true, &path, &root_len, err);
	if (rc)
		return rc;
	rc = make_parents(path, root_len, dst, err);
	if (rc)
		goto out;
	if (!lstat(path, &st)) {
		if (!S_ISREG(st.st_mode)) {
			cw_error_set(err, CW_EINVAL, "%.200s: exists and is not a regular file",
				     dst);
			rc = CW_EINVAL;
			goto out;
		}
		mode = st.st_mode & 07777;
	}
	slash = strrchr(path, '/');
	*slash = 0;
	tmp = str_cat3(slash == path ? "" : path, "/.cwtmp-", "XXXXXX");
	*slash = '/';
	if (!tmp) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		rc = CW_ENOMEM;
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		cw_error_set(err, CW_EIO, "%.200s: cannot create temp file: %s", dst,
			     strerror(errno));
		rc = CW_EIO;
		goto out;
	}
	if (fchmod(fd, mode))
		goto io;
	while (done < len) {
		ssize_t w = write(fd, p + done, len - done);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			goto io;
		}
		done += (size_t)w;
	}
	if (fsync(fd))
		goto io;
	if (close(fd)) {
		fd = -1;
		goto io;
	}
	fd = -1;
	if (rename(tmp, path))
		goto io;
	free(tmp);
	tmp = NULL;
	*slash = 0;
	if (fsync_dir(slash == path ? "/" : path)) {
		cw_error_set(err, CW_EIO, "%.200s: fsync of the directory failed: %s", dst,
			     strerror(errno));
		rc = CW_EIO;
	}
	goto out;

io:
	cw_error_set(err, CW_EIO, "%.200s: write failed: %s", dst, strerror(errno));
	rc = CW_EIO;
out:
	if (fd >= 0)
		close(fd);
	if (tmp)
		unlink(tmp);
	free(tmp);
	free(path);
	return rc;
}

/* --------------------------------------------------------------- libcurl */

int cw_storage_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? CW_OK : CW_EIO;
}

void cw_storage_global_cleanup(void)
{
	curl_global_cleanup();
}

struct xfer {
	CURL *h;
	struct buf body;       /* 2xx body */
	struct buf errbody;    /* start of a >= 300 body */
	size_t max;
	bool over, nomem;
	char errbuf[CURL_ERROR_SIZE];
};

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t n = size * nmemb;
	long status = 0;

	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 300) {           /* followed redirects deliver no body */
		size_t room = ERRBODY_MAX - x->errbody.len;

		if (buf_add(&x->errbody, ptr, n < room ? n : room)) {
			x->nomem = true;
			return 0;
		}
		return n < room ? n : 0;     /* enough of an error page: stop */
	}
	if (n > x->max - x->body.len) {
		x->over = true;
		return 0;
	}
	if (buf_add(&x->body, ptr, n)) {
		x->nomem = true;
		return 0;
	}
	return n;
}

#define SETOPT(h, opt, val)                                           \
	do {                                                          \
		if (curl_easy_setopt((h), (opt), (val)) != CURLE_OK) \
			goto setopt_fail;                             \
	} while (0)

/* A handle with the options every transfer shares. */
static int xfer_init(struct xfer *x, const struct cw_storage_conf *c, const char *url,
		     size_t max, struct cw_error *err)
{
	memset(x, 0, sizeof(*x));
	x->max = max;
	x->h = curl_easy_init();
	if (!x->h) {
		cw_error_set(err, CW_ENOMEM, "cannot create a curl handle");
		return CW_ENOMEM;
	}
	SETOPT(x->h, CURLOPT_URL, url);
	SETOPT(x->h, CURLOPT_NOSIGNAL, 1L);
	SETOPT(x->h, CURLOPT_TIMEOUT_MS, (long)(conf_timeout(c) * 1000.0));
	SETOPT(x->h, CURLOPT_ERRORBUFFER, x->errbuf);
	SETOPT(x->h, CURLOPT_WRITEFUNCTION, on_write);
	SETOPT(x->h, CURLOPT_WRITEDATA, x);
	SETOPT(x->h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(max > INT64_MAX ? INT64_MAX : max));
	SETOPT(x->h, CURLOPT_USERAGENT, USER_AGENT);
#if LIBCURL_VERSION_NUM >= 0x075500
	SETOPT(x->h, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(x->h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	SETOPT(x->h, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
	SETOPT(x->h, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	return CW_OK;
setopt_fail:
	curl_easy_cleanup(x->h);
	x->h = NULL;
	cw_error_set(err, CW_ENOMEM, "cannot set curl options");
	return CW_ENOMEM;
}

static void xfer_free(struct xfer *x)
{
	if (x->h)
		curl_easy_cleanup(x->h);
	free(x->body.p);
	free(x->errbody.p);
	memset(x, 0, sizeof(*x));
}

/* The S3 <Code> of an error body, reduced to [A-Za-z0-9.]; "" if none. */
static void s3_error_code(const struct buf *b, char *out, size_t outsz)
{
	const char *p = b->p ? strstr((const char *)b->p, "<Code>") : NULL;
	size_t o = 0;

	out[0] = 0;
	if (!p)
		return;
	for (p += 6; *p && *p != '<' && o + 1 < outsz; p++)
		if (isalnum((unsigned char)*p) || *p == '.')
			out[o++] = *p;
	out[o] = 0;
}

/*
 * Run the transfer and map the outcome.  what names the operation for messages
 * ("GET https://host/path", "S3 PUT s3://b/k"); secrets are scrubbed from curl's text.
 */
static int xfer_run(struct xfer *x, const struct cw_storage_conf *c, const char *what,
		    bool s3, const char *secret1, const char *secret2, struct cw_error *err)
{
	CURLcode cc = curl_easy_perform(x->h);
	long status = 0;
	char code[64], detail[CURL_ERROR_SIZE];
	int rc;

	curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &status);
	if (x->nomem || cc == CURLE_OUT_OF_MEMORY) {
		cw_error_set(err, CW_ENOMEM, "%s: out of memory", what);
		return CW_ENOMEM;
	}
	if (status >= 400) {
		s3_error_code(&x->errbody, code, sizeof(code));
		rc = status == 404 || status == 410 ? CW_ENOTFOUND : CW_EIO;
		cw_error_set(err, rc, "%s: HTTP %ld%s%s", what, status, code[0] ? " " : "", code);
		return rc;
	}
	if (x->over || cc == CURLE_FILESIZE_EXCEEDED) {
		cw_error_set(err, CW_ELIMIT, "%s: larger than max_download (%zu bytes)", what,
			     x->max);
		return CW_ELIMIT;
	}
	if (cc != CURLE_OK) {
		snprintf(detail, sizeof(detail), "%s",
			 x->errbuf[0] ? x->errbuf : curl_easy_strerror(cc));
		scrub(detail, secret1);
		scrub(detail, secret2);
		switch (cc) {
		case CURLE_OPERATION_TIMEDOUT:
			cw_error_set(err, CW_EIO, "%s: timed out after %gs", what, conf_timeout(c));
			return CW_EIO;
		case CURLE_TOO_MANY_REDIRECTS:
			cw_error_set(err, CW_EIO, "%s: more than %ld redirects", what,
				     conf_redirects(c));
			return CW_EIO;
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
			cw_error_set(err, CW_EINVAL, "%s: %s", what, detail);
			return CW_EINVAL;
		default:
			cw_error_set(err, CW_EIO, "%s: %s", what, detail);
			return CW_EIO;
		}
	}
	if (status < 200 || status > 299) {
		s3_error_code(&x->errbody, code, sizeof(code));
		cw_error_set(err, CW_EIO, "%s: unexpected HTTP %ld%s%s%s", what, status,
			     code[0] ? " " : "", code,
			     s3 || status < 300 || status > 399 ? "" : " (redirects are off)");
		return CW_EIO;
	}
	return CW_OK;
}

/* The password of scheme://user:password@host/..., for scrubbing (NULL if none). */
static char *url_password(const char *url)
{
	const char *p = strstr(url, "://"), *host_end, *at = NULL, *colon;

	if (!p)
		return NULL;
	p += 3;
	host_end = p + strcspn(p, "/?#");
	for (const char *q = p; q < host_end; q++)
		if (*q == '@')
			at = q;
	if (!at)
		return NULL;
	colon = memchr(p, ':', (size_t)(at - p));
	if (!colon)
		return NULL;
	return strndup(colon + 1, (size_t)(at - colon - 1));
}

static int http_get(const struct cw_storage_conf *c, const char *url, unsigned char **data,
		    size_t *len, struct cw_error *err)
{
	struct xfer x;
	char shown[MSG_URL_MAX], what[MSG_URL_MAX + 8];
	char *pw = url_password(url);
	long redirs = conf_redirects(c);
	int rc;

	url_for_msg(url, shown, sizeof(shown));
	snprintf(what, sizeof(what), "GET %s", shown);
	rc = xfer_init(&x, c, url, conf_max(c), err);
	if (rc)
		goto out;
	if (curl_easy_setopt(x.h, CURLOPT_FOLLOWLOCATION, redirs ? 1L : 0L) ||
	    curl_easy_setopt(x.h, CURLOPT_MAXREDIRS, redirs)) {
		cw_error_set(err, CW_ENOMEM, "cannot set curl options");
		rc = CW_ENOMEM;
		goto out;
	}
	rc = xfer_run(&x, c, what, false, pw, NULL, err);
	if (!rc && buf_take(&x.body, data, len)) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		rc = CW_ENOMEM;
	}
out:
	xfer_free(&x);
	free(pw);
	return rc;
}

/* -------------------------------------------------------------------- S3 */

struct s3_req {
	char *url;
	struct curl_slist *headers;
	const char *key_id, *secret, *token;
	char sigv4[96];
	char what[MSG_URL_MAX + 16];
};

static void s3_req_free(struct s3_req *r)
{
	free(r->url);
	curl_slist_free_all(r->headers);
}

static bool s3_unreserved(unsigned char ch)
{
	return isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~';
}

static int add_header(struct curl_slist **l, const char *name, const char *value)
{
	char *h = str_cat3(name, ": ", value);
	struct curl_slist *n;

	if (!h)
		return CW_ENOMEM;
	n = curl_slist_append(*l, h);
	free(h);
	if (!n)
		return CW_ENOMEM;
	*l = n;
	return CW_OK;
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(data ? data : "", len, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
		out[0] = 0;
		return;
	}
	for (unsigned int i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = 0;
}

/* Parse s3://bucket/key, build the URL and the signed headers for method. */
static int s3_prepare(const struct cw_storage_conf *c, const char *spec, const char *method,
		      const void *payload, size_t plen, const char *content_type,
		      struct s3_req *r, struct cw_error *err)
{
	const char *bucket = spec + 5, *key, *region, *endpoint, *rest;
	size_t blen, elen, klen;
	char defendpoint[128], hash[65];
	struct buf u = { 0 };

	memset(r, 0, sizeof(*r));
	key = strchr(bucket, '/');
	blen = key ? (size_t)(key - bucket) : strlen(bucket);
	snprintf(r->what, sizeof(r->what), "S3 %s s3://%.*s/%.100s%s", method,
		 (int)(blen < 64 ? blen : 64), bucket, key ? key + 1 : "",
		 key && strlen(key + 1) > 100 ? "..." : "");
	if (!key || !key[1] || !blen || blen > 255) {
		cw_error_set(err, CW_EINVAL, "%s: expected s3://bucket/key", r->what);
		return CW_EINVAL;
	}
	key++;
	for (size_t i = 0; i < blen; i++) {
		if (!isalnum((unsigned char)bucket[i]) && !strchr(".-_", bucket[i])) {
			cw_error_set(err, CW_EINVAL, "%s: invalid bucket name", r->what);
			return CW_EINVAL;
		}
	}
	region = nonempty(c ? c->s3_region : NULL);
	if (!region)
		region = "us-east-1";
	if (strlen(region) > 64 || strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-_")
	    != strlen(region)) {
		cw_error_set(err, CW_EINVAL, "%s: invalid S3 region", r->what);
		return CW_EINVAL;
	}
	endpoint = nonempty(c ? c->s3_endpoint : NULL);
	if (!endpoint) {
		snprintf(defendpoint, sizeof(defendpoint), "https://s3.%s.amazonaws.com", region);
		endpoint = defendpoint;
	}
	if (!strncasecmp(endpoint, "http://", 7))
		rest = endpoint + 7;
	else if (!strncasecmp(endpoint, "https://", 8))
		rest = endpoint + 8;
	else {
		cw_error_set(err, CW_EINVAL, "%s: S3 endpoint must be http:// or https://",
			     r->what);
		return CW_EINVAL;
	}
	elen = strlen(endpoint);
	while (elen > (size_t)(rest - endpoint) && endpoint[elen - 1] == '/')
		elen--;
	if (elen == (size_t)(rest - endpoint)) {
		cw_error_set(err, CW_EINVAL, "%s: S3 endpoint has no host", r->what);
		return CW_EINVAL;
	}

	/* URL: endpoint/bucket/key (path style) or scheme://bucket.host/key */
	if (c && c->s3_path_style) {
		if (buf_add(&u, endpoint, elen) || buf_add(&u, "/", 1) ||
		    buf_add(&u, bucket, blen))
			goto nomem;
	} else {
		if (buf_add(&u, endpoint, (size_t)(rest - endpoint)) ||
		    buf_add(&u, bucket, blen) || buf_add(&u, ".", 1) ||
		    buf_add(&u, rest, elen - (size_t)(rest - endpoint)))
			goto nomem;
	}
	if (buf_add(&u, "/", 1))
		goto nomem;
	klen = strlen(key);
	for (size_t i = 0; i < klen; i++) {
		unsigned char ch = (unsigned char)key[i];
		char esc[4];

		if (s3_unreserved(ch) || ch == '/') {
			if (buf_add(&u, &ch, 1))
				goto nomem;
			continue;
		}
		snprintf(esc, sizeof(esc), "%%%02X", ch);
		if (buf_add(&u, esc, 3))
			goto nomem;
	}
	r->url = (char *)u.p;
	u.p = NULL;

	/* credentials: the configuration, else the environment; none = anonymous */
	r->key_id = nonempty(c ? c->s3_access_key : NULL);
	if (!r->key_id)
		r->key_id = nonempty(getenv("AWS_ACCESS_KEY_ID"));
	r->secret = nonempty(c ? c->s3_secret_key : NULL);
	if (!r->secret)
		r->secret = nonempty(getenv("AWS_SECRET_ACCESS_KEY"));
	r->token = nonempty(c ? c->s3_session_token : NULL);
	if (!r->token)
		r->token = nonempty(getenv("AWS_SESSION_TOKEN"));
	if (!r->key_id != !r->secret) {
		cw_error_set(err, CW_EINVAL, "%s: S3 %s is set but not the %s", r->what,
			     r->key_id ? "access key" : "secret key",
			     r->key_id ? "secret key" : "access key");
		return CW_EINVAL;
	}
	if (r->token && strpbrk(r->token, "\r\n")) {
		cw_error_set(err, CW_EINVAL, "%s: S3 session token has a line break", r->what);
		return CW_EINVAL;
	}
	if (content_type && strpbrk(content_type, "\r\n")) {
		cw_error_set(err, CW_EINVAL, "%s: content type has a line break", r->what);
		return CW_EINVAL;
	}
	snprintf(r->sigv4, sizeof(r->sigv4), "aws:amz:%s:s3", region);

	sha256_hex(payload, plen, hash);
	if (!hash[0]) {
		cw_error_set(err, CW_EIO, "%s: SHA-256 failed", r->what);
		return CW_EIO;
	}
	if (add_header(&r->headers, "x-amz-content-sha256", hash))
		goto nomem;
	if (r->key_id && r->token && add_header(&r->headers, "x-amz-security-token", r->token))
		goto nomem;
	if (payload && add_header(&r->headers, "Content-Type",
				  nonempty(content_type) ? content_type :
				  "application/octet-stream"))
		goto nomem;
	return CW_OK;
nomem:
	free(u.p);
	cw_error_set(err, CW_ENOMEM, "out of memory");
	return CW_ENOMEM;
}

static int s3_xfer_init(struct xfer *x, const struct cw_storage_conf *c, struct s3_req *r,
			size_t max, struct cw_error *err)
{
	int rc = xfer_init(x, c, r->url, max, err);

	if (rc)
		return rc;
	/* keys may hold "./" or "../": send the path exactly as encoded (and signed) */
	SETOPT(x->h, CURLOPT_PATH_AS_IS, 1L);
	SETOPT(x->h, CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(x->h, CURLOPT_HTTPHEADER, r->headers);
	if (r->key_id) {
		SETOPT(x->h, CURLOPT_AWS_SIGV4, r->sigv4);
		SETOPT(x->h, CURLOPT_USERNAME, r->key_id);
		SETOPT(x->h, CURLOPT_PASSWORD, r->secret);
	}
	return CW_OK;
setopt_fail:
	cw_error_set(err, CW_ENOMEM, "cannot set curl options");
	return CW_ENOMEM;
}

static int s3_get(const struct cw_storage_conf *c, const char *src, unsigned char **data,
		  size_t *len, struct cw_error *err)
{
	struct s3_req r;
	struct xfer x = { 0 };
	int rc;

	rc = s3_prepare(c, src, "GET", NULL, 0, NULL, &r, err);
	if (rc)
		goto out;
	rc = s3_xfer_init(&x, c, &r, conf_max(c), err);
	if (rc)
		goto out;
	rc = xfer_run(&x, c, r.what, true, r.secret, r.token, err);
	if (!rc && buf_take(&x.body, data, len)) {
		cw_error_set(err, CW_ENOMEM, "out of memory");
		rc = CW_ENOMEM;
	}
out:
	xfer_free(&x);
	s3_req_free(&r);
	return rc;
}

static int s3_put(const struct cw_storage_conf *c, const char *dst, const void *data, size_t len,
		  const char *content_type, struct cw_error *err)
{
	struct s3_req r;
	struct xfer x = { 0 };
	const void *body = data ? data : "";
	int rc;

	rc = s3_prepare(c, dst, "PUT", body, len, content_type, &r, err);
	if (rc)
		goto out;
	rc = s3_xfer_init(&x, c, &r, ERRBODY_MAX, err);
	if (rc)
		goto out;
	SETOPT(x.h, CURLOPT_CUSTOMREQUEST, "PUT");
	SETOPT(x.h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	SETOPT(x.h, CURLOPT_POSTFIELDS, body);
	rc = xfer_run(&x, c, r.what, true, r.secret, r.token, err);
	goto out;
setopt_fail:
	cw_error_set(err, CW_ENOMEM, "cannot set curl options");
	rc = CW_ENOMEM;
out:
	xfer_free(&x);
	s3_req_free(&r);
	return rc;
}

/* ------------------------------------------------------------ entry points */

int cw_storage_get(const struct cw_storage_conf *c, const char *src, unsigned char **data,
		   size_t *len, struct cw_error *err)
{
	*data = NULL;
	*len = 0;
	if (!src || !*src) {
		cw_error_set(err, CW_EINVAL, "empty source");
		return CW_EINVAL;
	}
	switch (classify(src)) {
	case SRC_LOCAL:
	case SRC_FILE:
		return local_get(c, src, data, len, err);
	case SRC_HTTP:
		return http_get(c, src, data, len, err);
	case SRC_S3:
		return s3_get(c, src, data, len, err);
	default:
		return unsupported(src, err);
	}
}

int cw_storage_put(const struct cw_storage_conf *c, const char *dst, const void *data, size_t len,
		   const char *content_type, struct cw_error *err)
{
	if (!dst || !*dst) {
		cw_error_set(err, CW_EINVAL, "empty destination");
		return CW_EINVAL;
	}
	if (!data && len) {
		cw_error_set(err, CW_EINVAL, "no data");
		return CW_EINVAL;
	}
	switch (classify(dst)) {
	case SRC_LOCAL:
	case SRC_FILE:
		return local_put(c, dst, data, len, err);
	case SRC_HTTP: {
		char shown[MSG_URL_MAX];

		url_for_msg(dst, shown, sizeof(shown));
		cw_error_set(err, CW_EINVAL, "%s: http(s) outputs are not supported", shown);
		return CW_EINVAL;
	}
	case SRC_S3:
		return s3_put(c, dst, data, len, content_type, err);
	default:
		return unsupported(dst, err);
	}
}
