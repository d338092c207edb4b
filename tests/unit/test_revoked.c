/* Unit tests: the revoked-ids set (LimitedSet semantics) and its state file. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "consumer/revoked.h"

#include "check.h"

#define T0 1700000000.0

/* Collects the ids (and times) seen by cw_revoked_each, up to 8. */
struct seen {
	int n, stop_after;
	char ids[8][32];
	double added[8];
};

static bool collect(void *arg, const char *id, double added)
{
	struct seen *s = arg;

	if (s->n < 8) {
		snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", id);
		s->added[s->n] = added;
	}
	s->n++;
	return !s->stop_after || s->n < s->stop_after;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f || fputs(text, f) == EOF || fclose(f))
		abort();
}

static int count_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		abort();
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void test_add_has(void)
{
	struct cw_revoked *r = cw_revoked_new(50000, 10800);
	char long_id[300];

	CHECK(r != NULL);
	CHECK(cw_revoked_count(r) == 0);
	CHECK(!cw_revoked_has(r, "a", T0));
	CHECK(cw_revoked_add(r, "a", T0) == CW_OK);
	CHECK(cw_revoked_add(r, "b", T0 + 1) == CW_OK);
	CHECK(cw_revoked_has(r, "a", T0) && cw_revoked_has(r, "b", T0 + 1));
	CHECK(!cw_revoked_has(r, "c", T0) && !cw_revoked_has(r, "", T0));
	CHECK(!cw_revoked_has(r, NULL, T0));
	CHECK(cw_revoked_count(r) == 2);

	CHECK(cw_revoked_add(r, NULL, T0) == CW_EINVAL);
	CHECK(cw_revoked_add(r, "", T0) == CW_EINVAL);
	memset(long_id, 'x', 256);
	long_id[256] = '\0';
	CHECK(cw_revoked_add(r, long_id, T0) == CW_EINVAL);
	long_id[255] = '\0';
	CHECK(cw_revoked_add(r, long_id, T0) == CW_OK && cw_revoked_has(r, long_id, T0));
	CHECK(cw_revoked_add(r, "bad\xff", T0) == CW_EINVAL);
	CHECK(cw_revoked_add(r, "\xc3\xa9t\xc3\xa9", T0) == CW_OK);
	CHECK(cw_revoked_add(r, "\xf0\x9f\x98\x80", T0) == CW_OK);
	CHECK(cw_revoked_add(r, "\xc0\x80", T0) == CW_EINVAL);         /* overlong */
	CHECK(cw_revoked_add(r, "\xed\xa0\x80", T0) == CW_EINVAL);     /* surrogate */
	CHECK(cw_revoked_add(r, "\xf4\x90\x80\x80", T0) == CW_EINVAL); /* > U+10FFFF */
	CHECK(cw_revoked_add(r, "\xe2\x82", T0) == CW_EINVAL);         /* truncated */
	CHECK(cw_revoked_add(r, "nan", 0.0 / 0.0) == CW_EINVAL);
	CHECK(cw_revoked_count(r) == 5);
	cw_revoked_free(r);
	cw_revoked_free(NULL);
}

static void test_refresh_and_expiry(void)
{
	struct cw_revoked *r = cw_revoked_new(0, 100);
	struct seen s = {0};

	CHECK(cw_revoked_add(r, "a", T0) == CW_OK);
	CHECK(cw_revoked_add(r, "b", T0 + 10) == CW_OK);
	/* boundary: expired only when now - added > expires */
	CHECK(cw_revoked_has(r, "a", T0 + 100));
	CHECK(!cw_revoked_has(r, "a", T0 + 100.5));
	CHECK(cw_revoked_count(r) == 2); /* has() does not purge */
	/* re-adding refreshes the time and makes it the newest */
	CHECK(cw_revoked_add(r, "a", T0 + 50) == CW_OK);
	CHECK(cw_revoked_count(r) == 2);
	CHECK(cw_revoked_has(r, "a", T0 + 150) && !cw_revoked_has(r, "b", T0 + 150));
	cw_revoked_each(r, collect, &s);
	CHECK(s.n == 2 && !strcmp(s.ids[0], "b") && !strcmp(s.ids[1], "a"));
	CHECK(s.added[1] == T0 + 50);
	/* purge drops only expired entries */
	cw_revoked_purge(r, T0 + 110);
	CHECK(cw_revoked_count(r) == 2);
	cw_revoked_purge(r, T0 + 110.5);
	CHECK(cw_revoked_count(r) == 1 && cw_revoked_has(r, "a", T0 + 110.5));
	cw_revoked_purge(r, T0 + 1000);
	CHECK(cw_revoked_count(r) == 0 && !cw_revoked_has(r, "a", T0));
	cw_revoked_free(r);

	/* expires <= 0: never expire */
	r = cw_revoked_new(0, 0);
	CHECK(cw_revoked_add(r, "a", T0) == CW_OK);
	CHECK(cw_revoked_has(r, "a", T0 + 1e9));
	cw_revoked_purge(r, T0 + 1e9);
	CHECK(cw_revoked_count(r) == 1);
	cw_revoked_free(r);
}

static void test_maxlen(void)
{
	struct cw_revoked *r = cw_revoked_new(3, 10800);
	struct seen s = {0};
	char id[32];

	CHECK(cw_revoked_add(r, "a", T0) == CW_OK);
	CHECK(cw_revoked_add(r, "b", T0 + 1) == CW_OK);
	CHECK(cw_revoked_add(r, "c", T0 + 2) == CW_OK);
	CHECK(cw_revoked_add(r, "a", T0 + 3) == CW_OK); /* refresh: b is now oldest */
	CHECK(cw_revoked_add(r, "d", T0 + 4) == CW_OK);
	CHECK(cw_revoked_count(r) == 3);
	CHECK(!cw_revoked_has(r, "b", T0 + 4));
	CHECK(cw_revoked_has(r, "a", T0 + 4) && cw_revoked_has(r, "c", T0 + 4) &&
	      cw_revoked_has(r, "d", T0 + 4));
	CHECK(cw_revoked_add(r, "e", T0 + 5) == CW_OK);
	CHECK(!cw_revoked_has(r, "c", T0 + 5) && cw_revoked_has(r, "a", T0 + 5));
	cw_revoked_each(r, collect, &s);
	CHECK(s.n == 3 && !strcmp(s.ids[0], "a") && !strcmp(s.ids[1], "d") &&
	      !strcmp(s.ids[2], "e"));
	/* each() stops when fn returns false */
	memset(&s, 0, sizeof(s));
	s.stop_after = 2;
	cw_revoked_each(r, collect, &s);
	CHECK(s.n == 2);
	cw_revoked_free(r);

	/* 60000 adds with maxlen 50000 */
	r = cw_revoked_new(50000, 10800);
	for (int i = 0; i < 60000; i++) {
		snprintf(id, sizeof(id), "task-%d", i);
		if (cw_revoked_add(r, id, T0 + i * 0.001) != CW_OK) {
			CHECK(0);
			break;
		}
	}
	CHECK(cw_revoked_count(r) == 50000);
	CHECK(!cw_revoked_has(r, "task-0", T0 + 60) && !cw_revoked_has(r, "task-9999", T0 + 60));
	CHECK(cw_revoked_has(r, "task-10000", T0 + 60) && cw_revoked_has(r, "task-59999", T0 + 60));
	memset(&s, 0, sizeof(s));
	s.stop_after = 1;
	cw_revoked_each(r, collect, &s);
	CHECK(s.n == 1 && !strcmp(s.ids[0], "task-10000"));
	cw_revoked_free(r);
}

static void test_discard(void)
{
	struct cw_revoked *r = cw_revoked_new(10, 100);
	struct seen s = {0};

	CHECK(cw_revoked_add(r, "a", T0) == CW_OK);
	CHECK(cw_revoked_add(r, "b", T0) == CW_OK);
	CHECK(cw_revoked_add(r, "c", T0) == CW_OK);
	CHECK(cw_revoked_discard(r, "b"));
	CHECK(!cw_revoked_discard(r, "b"));
	CHECK(!cw_revoked_discard(r, "zz") && !cw_revoked_discard(r, NULL));
	CHECK(!cw_revoked_has(r, "b", T0) && cw_revoked_count(r) == 2);
	cw_revoked_each(r, collect, &s);
	CHECK(s.n == 2 && !strcmp(s.ids[0], "a") && !strcmp(s.ids[1], "c"));
	CHECK(cw_revoked_discard(r, "a") && cw_revoked_discard(r, "c"));
	CHECK(cw_revoked_count(r) == 0);
	CHECK(cw_revoked_add(r, "a", T0) == CW_OK && cw_revoked_has(r, "a", T0));
	/* an expired entry not yet purged can still be discarded */
	CHECK(cw_revoked_discard(r, "a") == true);
	cw_revoked_free(r);
}

static void test_save_load(const char *dir)
{
	struct cw_revoked *r = cw_revoked_new(50000, 100), *l;
	struct cw_error e = {0};
	struct seen s = {0};
	char path[512], sub[512];

	snprintf(path, sizeof(path), "%s/revoked.json", dir);
	CHECK(cw_revoked_add(r, "old", T0) == CW_OK);
	CHECK(cw_revoked_add(r, "mid", T0 + 50.25) == CW_OK);
	CHECK(cw_revoked_add(r, "new\"q\\", T0 + 100) == CW_OK);
	CHECK(cw_revoked_save(r, path, T0 + 120, &e) == CW_OK); /* "old" is expired */
	CHECK(count_dir(dir) == 1); /* no .tmp left behind */

	l = cw_revoked_new(50000, 100);
	CHECK(cw_revoked_load(l, path, T0 + 120, &e) == CW_OK);
	CHECK(cw_revoked_count(l) == 2);
	CHECK(!cw_revoked_has(l, "old", T0 + 120));
	cw_revoked_each(l, collect, &s);
	CHECK(s.n == 2 && !strcmp(s.ids[0], "mid") && !strcmp(s.ids[1], "new\"q\\"));
	CHECK(s.added[0] == T0 + 50.25 && s.added[1] == T0 + 100);
	cw_revoked_free(l);

	/* loading later leaves out what expired since the save */
	l = cw_revoked_new(50000, 100);
	CHECK(cw_revoked_load(l, path, T0 + 160, &e) == CW_OK);
	CHECK(cw_revoked_count(l) == 1 && cw_revoked_has(l, "new\"q\\", T0 + 160));
	cw_revoked_free(l);

	/* merge: newer time wins, order by time, maxlen drops the oldest */
	l = cw_revoked_new(2, 100);
	CHECK(cw_revoked_add(l, "mid", T0 + 110) == CW_OK);
	CHECK(cw_revoked_add(l, "x", T0 + 60) == CW_OK);
	CHECK(cw_revoked_load(l, path, T0 + 120, &e) == CW_OK);
	memset(&s, 0, sizeof(s));
	cw_revoked_each(l, collect, &s);
	CHECK(s.n == 2 && !strcmp(s.ids[0], "new\"q\\") && !strcmp(s.ids[1], "mid"));
	CHECK(s.added[1] == T0 + 110);
	cw_revoked_free(l);

	/* saving over an existing file replaces it */
	CHECK(cw_revoked_discard(r, "mid"));
	CHECK(cw_revoked_save(r, path, T0 + 120, &e) == CW_OK);
	l = cw_revoked_new(50000, 100);
	CHECK(cw_revoked_load(l, path, T0 + 120, &e) == CW_OK);
	CHECK(cw_revoked_count(l) == 1 && !cw_revoked_has(l, "mid", T0 + 120));
	cw_revoked_free(l);

	/* failed saves report the path and leave no temp file */
	snprintf(sub, sizeof(sub), "%s/nodir/revoked.json", dir);
	CHECK(cw_revoked_save(r, sub, T0, &e) == CW_EIO && strstr(e.msg, "nodir") != NULL);
	snprintf(sub, sizeof(sub), "%s/adir", dir);
	CHECK(mkdir(sub, 0700) == 0);
	CHECK(cw_revoked_save(r, sub, T0, &e) == CW_EIO && strstr(e.msg, "adir") != NULL);
	CHECK(count_dir(dir) == 2);
	CHECK(rmdir(sub) == 0);

	unlink(path);
	cw_revoked_free(r);
}

static void expect_load_error(const char *dir, const char *text, int code, const char *needle)
{
	struct cw_revoked *r = cw_revoked_new(100, 100);
	struct cw_error e = {0};
	struct seen s = {0};
	char path[512];

	snprintf(path, sizeof(path), "%s/bad.json", dir);
	write_text(path, text);
	CHECK(cw_revoked_add(r, "keep", T0) == CW_OK);
	CHECK(cw_revoked_add(r, "x", T0 + 1) == CW_OK);
	CHECK(cw_revoked_load(r, path, T0 + 2, &e) == code);
	if (!strstr(e.msg, needle) || !strstr(e.msg, path))
		fprintf(stderr, "  for %s: msg \"%s\"\n", text, e.msg);
	CHECK(strstr(e.msg, needle) != NULL && strstr(e.msg, path) != NULL);
	/* the set is unchanged */
	cw_revoked_each(r, collect, &s);
	CHECK(s.n == 2 && !strcmp(s.ids[0], "keep") && !strcmp(s.ids[1], "x"));
	CHECK(s.added[0] == T0 && s.added[1] == T0 + 1);
	unlink(path);
	cw_revoked_free(r);
}

static void test_load_errors(const char *dir)
{
	struct cw_revoked *r = cw_revoked_new(100, 100);
	struct cw_error e = {0};
	char path[512];

	snprintf(path, sizeof(path), "%s/missing.json", dir);
	CHECK(cw_revoked_add(r, "a", T0) == CW_OK);
	CHECK(cw_revoked_load(r, path, T0, &e) == CW_OK);
	CHECK(cw_revoked_count(r) == 1);
	/* a directory is not a state file */
	CHECK(cw_revoked_load(r, dir, T0, &e) == CW_EIO && strstr(e.msg, dir) != NULL);
	CHECK(cw_revoked_count(r) == 1);
	cw_revoked_free(r);

	expect_load_error(dir, "{\"version\":1,\"revoked\":[[\"a\",1", CW_EFORMAT, "invalid JSON");
	expect_load_error(dir, "", CW_EFORMAT, "invalid JSON");
	expect_load_error(dir, "{\"revoked\": 5}", CW_EFORMAT, "version");
	expect_load_error(dir, "{\"version\":1,\"revoked\": 5}", CW_EFORMAT, "\"revoked\"");
	expect_load_error(dir, "[1,2]", CW_EFORMAT, "not a JSON object");
	expect_load_error(dir, "{\"version\":2,\"revoked\":[]}", CW_EFORMAT, "version");
	expect_load_error(dir, "{\"version\":1,\"revoked\":[[\"x\"]]}", CW_EFORMAT, "revoked[0]");
	expect_load_error(dir, "{\"version\":1,\"revoked\":[[\"y\",1700000001],[1,2]]}",
			  CW_EFORMAT, "revoked[1]");
	expect_load_error(dir, "{\"version\":1,\"revoked\":[[\"y\",\"1\"]]}", CW_EFORMAT,
			  "revoked[0]");
	expect_load_error(dir, "{\"version\":1,\"revoked\":[[\"\",1]]}", CW_EFORMAT, "revoked[0]");
	expect_load_error(dir, "{\"version\":1,\"revoked\":[\"y\"]}", CW_EFORMAT, "revoked[0]");
}

int main(void)
{
	char dir[] = "/tmp/cw-test-revoked-XXXXXX";

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	test_add_has();
	test_refresh_and_expiry();
	test_maxlen();
	test_discard();
	test_save_load(dir);
	test_load_errors(dir);
	CHECK(count_dir(dir) == 0);
	rmdir(dir);
	return check_summary();
}
