/*
 * Storage backend for local files: plain paths and file:// URLs, confined to
 * the configured roots, with atomic writes.
 *
 * A path is first cleaned lexically ("." and ".." folded), then canonicalised
 * with realpath(3) and must equal a canonical root or lie below it.  A missing
 * file is reported as CW_ENOTFOUND only when its deepest existing ancestor is
 * inside a root, so nothing about the rest of the file system leaks through
 * error codes.
 */
#include "storage/storage_int.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

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
	size_t scheme;
	long rl;
	int rc;

	*out = NULL;
	if (!spec || !*spec) {
		cw_error_set(err, CW_EINVAL, "empty path");
		return CW_EINVAL;
	}
	scheme = cw_storage_scheme_len(spec);
	if (scheme == 4 && !strncasecmp(spec, "file", 4)) {
		rc = file_url_path(spec, &path, err);
		if (rc)
			return rc;
	} else if (scheme) {
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
		abs = cw_storage_cat3(roots.v[0], "/", path);
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
	*out = cw_storage_cat3(strcmp(rp, "/") ? rp : "",
			       norm + (strcmp(anc, "/") ? strlen(anc) : 0), "");
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
	size_t max = cw_storage_max(c);
	struct cw_storage_buf b = { 0 };
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
	if (cw_storage_buf_reserve(&b, (size_t)st.st_size ? (size_t)st.st_size : 4096))
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
		else if (cw_storage_buf_add(&b, probe, (size_t)r))
			goto nomem;
		if (b.len > max)
			goto limit;
	}
	b.p[b.len] = 0;
	rc = cw_storage_buf_take(&b, data, len);
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

/* The content type is S3 metadata; a file has nowhere to keep it. */
static int local_put(const struct cw_storage_conf *c, const char *dst, const void *data,
		     size_t len, const char *content_type, struct cw_error *err)
{
	const unsigned char *p = data;
	char *path, *tmp = NULL, *slash;
	mode_t mode = 0644;
	size_t root_len, done = 0;
	struct stat st;
	int fd = -1, rc;

	(void)content_type;
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
	tmp = cw_storage_cat3(slash == path ? "" : path, "/.cwtmp-", "XXXXXX");
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

static const char *const local_schemes[] = { "", "file", NULL };

const struct cw_storage_ops cw_storage_local_ops = {
	.name = "local",
	.schemes = local_schemes,
	.get = local_get,
	.put = local_put,
};
