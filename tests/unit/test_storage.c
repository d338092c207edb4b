/* Unit tests: storage roots, local get/put, and http(s) inputs against a loopback server
 * (python3 -m http.server, started and killed here).  No network beyond 127.0.0.1. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/storage.h"

#include "check.h"

static char base[64];            /* the test's temp dir */
static char root[128], root2[128], outside[128];

static char *cat(const char *a, const char *b)
{
	static char bufs[8][1024];
	static int i;
	char *s = bufs[i++ % 8];

	snprintf(s, sizeof(bufs[0]), "%s%s", a, b);
	return s;
}

static void write_bytes(const char *path, const void *d, size_t n)
{
	FILE *f = fopen(path, "wb");

	if (!f || fwrite(d, 1, n, f) != n || fclose(f))
		abort();
}

static int count_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(p);
}

/* Check a local_path result: rc, and (when OK) the canonical path. */
static void expect_path(const struct cw_storage_conf *c, const char *in, bool for_write, int rc,
			const char *want)
{
	struct cw_error err = { 0 };
	char *out = (char *)"unset";
	int got = cw_storage_local_path(c, in, for_write, &out, &err);

	CHECK(got == rc);
	if (got != rc)
		fprintf(stderr, "  path %s: got %d (%s), want %d\n", in, got, err.msg, rc);
	if (rc == CW_OK && got == CW_OK) {
		CHECK(want == NULL || !strcmp(out, want));
		if (want && strcmp(out, want))
			fprintf(stderr, "  path %s: got %s, want %s\n", in, out, want);
	}
	if (got == CW_OK)
		free(out);
	else
		CHECK(out == NULL && err.code == rc && err.msg[0]);
}

static void expect_get(const struct cw_storage_conf *c, const char *src, int rc,
		       const void *want, size_t wantlen)
{
	struct cw_error err = { 0 };
	unsigned char *d = NULL;
	size_t n = 0;
	int got = cw_storage_get(c, src, &d, &n, &err);

	CHECK(got == rc);
	if (got != rc)
		fprintf(stderr, "  get %s: got %d (%s), want %d\n", src, got, err.msg, rc);
	if (got == CW_OK) {
		CHECK(d != NULL && d[n] == 0);
		if (want) {
			CHECK(n == wantlen && !memcmp(d, want, wantlen));
		}
		free(d);
	} else {
		CHECK(d == NULL && n == 0 && err.code == rc);
	}
}

static int expect_put(const struct cw_storage_conf *c, const char *dst, const void *d, size_t n,
		      int rc)
{
	struct cw_error err = { 0 };
	int got = cw_storage_put(c, dst, d, n, "application/octet-stream", &err);

	CHECK(got == rc);
	if (got != rc)
		fprintf(stderr, "  put %s: got %d (%s), want %d\n", dst, got, err.msg, rc);
	if (got)
		CHECK(err.code == got && err.msg[0]);
	return got;
}

static void setup_tree(void)
{
	snprintf(root, sizeof(root), "%s/root", base);
	snprintf(root2, sizeof(root2), "%s/root2", base);
	snprintf(outside, sizeof(outside), "%s/outside", base);
	if (mkdir(root, 0755) || mkdir(root2, 0755) || mkdir(outside, 0755) ||
	    mkdir(cat(root, "/sub"), 0755))
		abort();
	write_bytes(cat(root, "/a.txt"), "hello", 5);
	write_bytes(cat(root, "/sub/b.txt"), "bee", 3);
	write_bytes(cat(root, "/with space.txt"), "sp", 2);
	write_bytes(cat(root2, "/c.txt"), "sea", 3);
	write_bytes(cat(outside, "/secret.txt"), "secret", 6);
	/* root/evil -> outside file, root/evildir -> outside dir, root/good -> a.txt */
	if (symlink(cat(outside, "/secret.txt"), cat(root, "/evil")) ||
	    symlink("../outside", cat(root, "/evildir")) ||
	    symlink("a.txt", cat(root, "/good")) ||
	    symlink("sub", cat(root, "/gooddir")) ||
	    symlink(cat(outside, "/missing"), cat(root, "/dangling")) ||
	    symlink(root, cat(base, "/rootlink")))
		abort();
}

static void test_paths(void)
{
	const char *roots[] = { root, root2, NULL };
	const char *no_roots[] = { NULL };
	char rootlink[256], nope[256];
	const char *link_roots[] = { rootlink, NULL };
	const char *missing_first[] = { nope, root2, NULL };
	struct cw_storage_conf c = { .roots = roots };
	struct cw_storage_conf none = { 0 }, empty = { .roots = no_roots };
	struct cw_storage_conf viasym = { .roots = link_roots };
	struct cw_storage_conf nofirst = { .roots = missing_first };
	char a[1024], url[1200];

	snprintf(rootlink, sizeof(rootlink), "%s/rootlink", base);
	snprintf(nope, sizeof(nope), "%s/nope", base);
	snprintf(a, sizeof(a), "%s/a.txt", root);
	expect_path(&c, a, false, CW_OK, a);
	expect_path(&c, "a.txt", false, CW_OK, a);                 /* relative: first root */
	expect_path(&c, "./sub/../a.txt", false, CW_OK, a);
	expect_path(&c, cat(root, "/sub/../a.txt"), false, CW_OK, a);
	expect_path(&c, cat(root, "//sub///b.txt"), false, CW_OK, cat(root, "/sub/b.txt"));
	expect_path(&c, cat(root2, "/c.txt"), false, CW_OK, cat(root2, "/c.txt"));
	expect_path(&c, root, false, CW_OK, root);                 /* the root itself */

	/* .. escapes, absolute outside, prefix lookalikes */
	expect_path(&c, "../outside/secret.txt", false, CW_EINVAL, NULL);
	expect_path(&c, "sub/../../outside/secret.txt", false, CW_EINVAL, NULL);
	expect_path(&c, cat(root, "/../outside/secret.txt"), false, CW_EINVAL, NULL);
	expect_path(&c, cat(root, "/nodir/../../outside/secret.txt"), false, CW_EINVAL, NULL);
	expect_path(&c, cat(outside, "/secret.txt"), false, CW_EINVAL, NULL);
	expect_path(&c, "/etc/passwd", false, CW_EINVAL, NULL);
	expect_path(&c, "/", false, CW_EINVAL, NULL);
	expect_path(&c, cat(root, "2x/f"), false, CW_EINVAL, NULL);
	expect_path(&c, cat(outside, "/missing"), false, CW_EINVAL, NULL);  /* not ENOTFOUND */
	expect_path(&c, "../../../../../../../../etc/passwd", false, CW_EINVAL, NULL);

	/* symlinks: outside refused, inside allowed (canonical result) */
	expect_path(&c, cat(root, "/evil"), false, CW_EINVAL, NULL);
	expect_path(&c, "evil", false, CW_EINVAL, NULL);
	expect_path(&c, cat(root, "/evildir/secret.txt"), false, CW_EINVAL, NULL);
	expect_path(&c, cat(root, "/good"), false, CW_OK, a);
	expect_path(&c, cat(root, "/gooddir/b.txt"), false, CW_OK, cat(root, "/sub/b.txt"));
	expect_path(&c, cat(root, "/dangling"), false, CW_EINVAL, NULL);
	/* a root given through a symlink is canonicalised */
	expect_path(&viasym, cat(base, "/rootlink/a.txt"), false, CW_OK, a);
	expect_path(&viasym, a, false, CW_OK, a);

	/* missing inside: ENOTFOUND */
	expect_path(&c, cat(root, "/missing.txt"), false, CW_ENOTFOUND, NULL);
	expect_path(&c, "nodir/missing.txt", false, CW_ENOTFOUND, NULL);
	expect_path(&c, "a.txt/x", false, CW_ENOTFOUND, NULL);

	/* file:// forms */
	snprintf(url, sizeof(url), "file://%s", a);
	expect_path(&c, url, false, CW_OK, a);
	snprintf(url, sizeof(url), "FILE://localhost%s", a);
	expect_path(&c, url, false, CW_OK, a);
	snprintf(url, sizeof(url), "file://%s/with%%20space.txt", root);
	expect_path(&c, url, false, CW_OK, cat(root, "/with space.txt"));
	snprintf(url, sizeof(url), "file://%s/secret.txt", outside);
	expect_path(&c, url, false, CW_EINVAL, NULL);
	snprintf(url, sizeof(url), "file://%s/%%2e%%2e/outside/secret.txt", root);
	expect_path(&c, url, false, CW_EINVAL, NULL);
	snprintf(url, sizeof(url), "file://%s/a%%00.txt", root);
	expect_path(&c, url, false, CW_EINVAL, NULL);
	snprintf(url, sizeof(url), "file://%s/a%%zz", root);
	expect_path(&c, url, false, CW_EINVAL, NULL);
	expect_path(&c, "file://otherhost/etc/passwd", false, CW_EINVAL, NULL);
	expect_path(&c, "file://a.txt", false, CW_EINVAL, NULL);

	/* no roots, or no usable first root for a relative path */
	expect_path(&none, a, false, CW_EINVAL, NULL);
	expect_path(NULL, a, false, CW_EINVAL, NULL);
	expect_path(&empty, a, false, CW_EINVAL, NULL);
	expect_path(&nofirst, "c.txt", false, CW_EINVAL, NULL);
	expect_path(&nofirst, cat(root2, "/c.txt"), false, CW_OK, cat(root2, "/c.txt"));
	expect_path(&c, "", false, CW_EINVAL, NULL);
	expect_path(&c, "http://127.0.0.1/x", false, CW_EINVAL, NULL);

	/* for writing: missing files and directories are fine inside a root */
	expect_path(&c, "new/deep/out.bin", true, CW_OK, cat(root, "/new/deep/out.bin"));
	expect_path(&c, cat(root, "/gooddir/new.txt"), true, CW_OK, cat(root, "/sub/new.txt"));
	expect_path(&viasym, cat(base, "/rootlink/x/y"), true, CW_OK, cat(root, "/x/y"));
	expect_path(&c, a, true, CW_OK, a);
	expect_path(&c, "../outside/new.txt", true, CW_EINVAL, NULL);
	expect_path(&c, cat(outside, "/new.txt"), true, CW_EINVAL, NULL);
	expect_path(&c, cat(root, "/evildir/new.txt"), true, CW_EINVAL, NULL);
	expect_path(&c, cat(root, "/evil"), true, CW_EINVAL, NULL);
	expect_path(&c, cat(root, "/dangling"), true, CW_EINVAL, NULL);
	expect_path(&c, "/", true, CW_EINVAL, NULL);
	CHECK(count_dir(outside) == 1);
	CHECK(access(cat(root, "/new"), F_OK) != 0);   /* resolving creates nothing */
}

static void test_local_get_put(void)
{
	const char *roots[] = { root, NULL };
	struct cw_storage_conf c = { .roots = roots };
	struct cw_storage_conf small = { .roots = roots, .max_download = 4 };
	struct cw_storage_conf exact = { .roots = roots, .max_download = 5 };
	unsigned char bin[70000], bin2[10];
	struct stat st;
	char url[1200];

	for (size_t i = 0; i < sizeof(bin); i++)
		bin[i] = (unsigned char)(i * 7 % 251);     /* NULs included */
	memset(bin2, 0, sizeof(bin2));

	expect_get(&c, "a.txt", CW_OK, "hello", 5);
	expect_get(&c, cat(root, "/good"), CW_OK, "hello", 5);
	snprintf(url, sizeof(url), "file://%s/sub/b.txt", root);
	expect_get(&c, url, CW_OK, "bee", 3);
	expect_get(&c, "missing.txt", CW_ENOTFOUND, NULL, 0);
	expect_get(&c, cat(root, "/no/such/dir/f"), CW_ENOTFOUND, NULL, 0);
	expect_get(&c, cat(outside, "/secret.txt"), CW_EINVAL, NULL, 0);
	expect_get(&c, cat(root, "/evil"), CW_EINVAL, NULL, 0);
	expect_get(&c, "sub", CW_EINVAL, NULL, 0);                 /* a directory */
	expect_get(&small, "a.txt", CW_ELIMIT, NULL, 0);
	expect_get(&exact, "a.txt", CW_OK, "hello", 5);
	expect_get(&c, "ftp://127.0.0.1/x", CW_EINVAL, NULL, 0);
	expect_get(&c, "gs://bucket/key", CW_EINVAL, NULL, 0);
	expect_get(&c, "", CW_EINVAL, NULL, 0);
	write_bytes(cat(root, "/empty"), "", 0);
	expect_get(&c, "empty", CW_OK, "", 0);

	/* write to a new nested path: dirs created, no temp file left, round trip */
	expect_put(&c, "new/deep/out.bin", bin, sizeof(bin), CW_OK);
	CHECK(count_dir(cat(root, "/new/deep")) == 1);
	CHECK(count_dir(cat(root, "/new")) == 1);
	expect_get(&c, "new/deep/out.bin", CW_OK, bin, sizeof(bin));
	/* overwrite keeps the mode, still atomic */
	CHECK(chmod(cat(root, "/new/deep/out.bin"), 0600) == 0);
	expect_put(&c, cat(root, "/new/deep/out.bin"), bin2, sizeof(bin2), CW_OK);
	expect_get(&c, "new/deep/out.bin", CW_OK, bin2, sizeof(bin2));
	CHECK(stat(cat(root, "/new/deep/out.bin"), &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(count_dir(cat(root, "/new/deep")) == 1);
	snprintf(url, sizeof(url), "file://%s/viaurl/x.txt", root);
	expect_put(&c, url, "u", 1, CW_OK);
	expect_get(&c, "viaurl/x.txt", CW_OK, "u", 1);
	expect_put(&c, "zero.bin", NULL, 0, CW_OK);
	expect_get(&c, "zero.bin", CW_OK, "", 0);
	CHECK(stat(cat(root, "/zero.bin"), &st) == 0 && (st.st_mode & 0777) == 0644);
	expect_put(&c, cat(root, "/gooddir/through-link.txt"), "l", 1, CW_OK);
	expect_get(&c, "sub/through-link.txt", CW_OK, "l", 1);

	/* refused writes, with nothing created outside */
	expect_put(&c, cat(outside, "/new.txt"), "x", 1, CW_EINVAL);
	expect_put(&c, "../outside/new.txt", "x", 1, CW_EINVAL);
	expect_put(&c, "new/../../outside/new.txt", "x", 1, CW_EINVAL);
	expect_put(&c, cat(root, "/evildir/new.txt"), "x", 1, CW_EINVAL);
	expect_put(&c, cat(root, "/evildir/d/new.txt"), "x", 1, CW_EINVAL);
	expect_put(&c, cat(root, "/evil"), "x", 1, CW_EINVAL);
	expect_put(&c, cat(root, "/dangling"), "x", 1, CW_EINVAL);
	CHECK(count_dir(outside) == 1);
	expect_put(&c, "sub", "x", 1, CW_EINVAL);                  /* a directory */
	expect_put(&c, "a.txt/x", "x", 1, CW_EINVAL);              /* parent is a file */
	expect_put(&c, "http://127.0.0.1:9/out", "x", 1, CW_EINVAL);
	expect_put(&c, "https://user:pw@127.0.0.1:9/out", "x", 1, CW_EINVAL);
	expect_put(&c, "ftp://127.0.0.1/out", "x", 1, CW_EINVAL);
	expect_put(&c, "", "x", 1, CW_EINVAL);
	expect_get(&c, "a.txt", CW_OK, "hello", 5);                /* untouched */
	CHECK(count_dir(root) == 12);
}

/* ------------------------------------------------------------------ http */

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
	    !getsockname(fd, (struct sockaddr *)&sa, &sl))
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static bool can_connect(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && !connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (fd >= 0)
		close(fd);
	return ok;
}

static pid_t start_http_server(const char *dir, int port)
{
	char portstr[16];
	pid_t pid;

	snprintf(portstr, sizeof(portstr), "%d", port);
	pid = fork();
	if (pid < 0)
		return -1;
	if (!pid) {
		int null = open("/dev/null", O_RDWR);

		if (null >= 0) {
			dup2(null, 1);
			dup2(null, 2);
		}
		execl("/usr/bin/python3", "python3", "-m", "http.server", "--bind", "127.0.0.1",
		      "--directory", dir, portstr, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 200; i++) {      /* up to 10 s */
		struct timespec ts = { 0, 50 * 1000 * 1000 };

		if (can_connect(port))
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/* A listener that never answers: for the timeout test. */
static int silent_listener(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4) ||
	    getsockname(fd, (struct sockaddr *)&sa, &sl)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

/* Serves one connection: reads the request head, sends head + n filler bytes, closes
 * (no Content-Length: the body ends with the connection). */
static pid_t one_shot_server(int *port, const char *head, size_t n)
{
	int fd = silent_listener(port);
	pid_t pid;

	if (fd < 0)
		return -1;
	pid = fork();
	if (pid) {
		close(fd);
		return pid;
	}
	{
		char req[4096], chunk[4096];
		int c = accept(fd, NULL, NULL);
		ssize_t r;
		size_t got = 0;

		if (c < 0)
			_exit(1);
		while (got < sizeof(req) - 1 && (r = read(c, req + got, sizeof(req) - 1 - got)) > 0) {
			got += (size_t)r;
			req[got] = 0;
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		memset(chunk, 'z', sizeof(chunk));
		if (write(c, head, strlen(head)) < 0)
			_exit(1);
		while (n) {
			size_t k = n < sizeof(chunk) ? n : sizeof(chunk);

			if (write(c, chunk, k) < 0)
				break;
			n -= k;
		}
		close(c);
		_exit(0);
	}
}

static void expect_get_msg(const struct cw_storage_conf *c, const char *src, int rc,
			   const char *must, const char *must_not1, const char *must_not2)
{
	struct cw_error err = { 0 };
	unsigned char *d = NULL;
	size_t n = 0;
	int got = cw_storage_get(c, src, &d, &n, &err);

	CHECK(got == rc);
	if (got != rc)
		fprintf(stderr, "  get %s: got %d (%s), want %d\n", src, got, err.msg, rc);
	if (got == CW_OK) {
		free(d);
		return;
	}
	CHECK(!must || strstr(err.msg, must));
	CHECK(!must_not1 || !strstr(err.msg, must_not1));
	CHECK(!must_not2 || !strstr(err.msg, must_not2));
	if ((must && !strstr(err.msg, must)) || (must_not1 && strstr(err.msg, must_not1)) ||
	    (must_not2 && strstr(err.msg, must_not2)))
		fprintf(stderr, "  message: %s\n", err.msg);
}

static void test_http(void)
{
	struct cw_storage_conf c = { .timeout = 10 };
	struct cw_storage_conf capped = { .timeout = 10, .max_download = 1000 };
	struct cw_storage_conf noredir = { .timeout = 10, .max_redirects = -1 };
	struct cw_storage_conf quick = { .timeout = 0.5 };
	char dir[1024], url[1200];
	static unsigned char blob[200000];
	int port = free_port(), sport = -1, sfd;
	pid_t pid;

	if (access("/usr/bin/python3", X_OK)) {
		fprintf(stderr, "test_storage: no /usr/bin/python3, http tests skipped\n");
		return;
	}
	snprintf(dir, sizeof(dir), "%s/www", base);
	if (mkdir(dir, 0755) || mkdir(cat(dir, "/sub"), 0755))
		abort();
	for (size_t i = 0; i < sizeof(blob); i++)
		blob[i] = (unsigned char)(i * 13 % 256);
	write_bytes(cat(dir, "/blob.bin"), blob, sizeof(blob));
	write_bytes(cat(dir, "/sub/index.html"), "index", 5);
	pid = port > 0 ? start_http_server(dir, port) : -1;
	CHECK(pid > 0);
	if (pid <= 0)
		return;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/blob.bin", port);
	expect_get(&c, url, CW_OK, blob, sizeof(blob));
	expect_get(&capped, url, CW_ELIMIT, NULL, 0);             /* Content-Length > cap */
	snprintf(url, sizeof(url), "HTTP://127.0.0.1:%d/blob.bin?x=1", port);
	expect_get(&c, url, CW_OK, blob, sizeof(blob));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/missing", port);
	expect_get_msg(&c, url, CW_ENOTFOUND, "404", NULL, NULL);
	/* /sub redirects to /sub/ */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/sub", port);
	expect_get(&c, url, CW_OK, "index", 5);
	expect_get_msg(&noredir, url, CW_EIO, "301", NULL, NULL);
	/* credentials and query strings stay out of messages */
	snprintf(url, sizeof(url), "http://bob:hunter2pw@127.0.0.1:%d/missing?token=tok3n", port);
	expect_get_msg(&c, url, CW_ENOTFOUND, "bob", "hunter2pw", "tok3n");
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);

	/* server gone: connection refused */
	snprintf(url, sizeof(url), "http://al:s3cr3tpass@127.0.0.1:%d/blob.bin", port);
	expect_get_msg(&c, url, CW_EIO, "127.0.0.1", "s3cr3tpass", NULL);

	/* a server that accepts and never answers */
	sfd = silent_listener(&sport);
	CHECK(sfd >= 0);
	if (sfd >= 0) {
		/* the short read timeout is what ends it: the error says so */
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/slow", sport);
		expect_get_msg(&quick, url, CW_EIO, "timed out", NULL, NULL);
		close(sfd);
	}
	expect_get(&c, "http://", CW_EINVAL, NULL, 0);

	/* no Content-Length: the cap is enforced while the body streams in */
	pid = one_shot_server(&sport, "HTTP/1.0 200 OK\r\n\r\n", 5000);
	CHECK(pid > 0);
	if (pid > 0) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/stream", sport);
		expect_get_msg(&capped, url, CW_ELIMIT, "max_download", NULL, NULL);
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
	pid = one_shot_server(&sport, "HTTP/1.0 200 OK\r\n\r\n", 5000);
	CHECK(pid > 0);
	if (pid > 0) {
		struct cw_error err = { 0 };
		unsigned char *d = NULL;
		size_t n = 0;

		snprintf(url, sizeof(url), "http://127.0.0.1:%d/stream", sport);
		CHECK(cw_storage_get(&c, url, &d, &n, &err) == CW_OK);
		CHECK(n == 5000 && d && d[0] == 'z' && d[4999] == 'z' && d[5000] == 0);
		free(d);
		waitpid(pid, NULL, 0);
	}
	/* an error status with an S3-style body: the Code lands in the message */
	pid = one_shot_server(&sport, "HTTP/1.0 503 Slow Down\r\n\r\n<Error><Code>SlowDown"
			      "</Code></Error>", 0);
	CHECK(pid > 0);
	if (pid > 0) {
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/busy", sport);
		expect_get_msg(&c, url, CW_EIO, "HTTP 503 SlowDown", NULL, NULL);
		waitpid(pid, NULL, 0);
	}
}

int main(void)
{
	snprintf(base, sizeof(base), "/tmp/cw-test-storage-XXXXXX");
	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	if (cw_storage_global_init()) {
		fprintf(stderr, "cw_storage_global_init failed\n");
		return 1;
	}
	setup_tree();
	test_paths();
	test_local_get_put();
	test_http();
	cw_storage_global_cleanup();
	CHECK(nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
	return check_summary();
}
