/* Unit tests: document store table names, URLs and digests (no database needed). */
#include <stdio.h>
#include <string.h>

#include "docconv/docstore.h"

#include "check.h"

static bool table_ok(const char *t)
{
	struct cw_docstore_error err = {0};
	int rc = cw_docstore_check_table(t, &err);
	if (rc != CW_DOCSTORE_OK)
		CHECK(strstr(err.msg, "is not a table name") != NULL);
	return rc == CW_DOCSTORE_OK;
}

static void test_tables(void)
{
	char longest[64], too_long[65], qualified[140];
	memset(longest, 'a', 63);
	longest[63] = '\0';
	memset(too_long, 'a', 64);
	too_long[64] = '\0';
	snprintf(qualified, sizeof(qualified), "%s.%s", longest, longest);

	CHECK(table_ok("documents"));
	CHECK(table_ok("_docs2"));
	CHECK(table_ok("Docs"));
	CHECK(table_ok("store.docs"));
	CHECK(table_ok(longest));
	CHECK(table_ok(qualified));

	CHECK(!table_ok(""));
	CHECK(!table_ok("1docs"));
	CHECK(!table_ok(too_long));
	CHECK(!table_ok("a.b.c"));
	CHECK(!table_ok(".docs"));
	CHECK(!table_ok("docs."));
	CHECK(!table_ok("."));
	CHECK(!table_ok("bad-name"));
	CHECK(!table_ok("docs;DROP TABLE x"));
	CHECK(!table_ok("docs\" OR 1=1 --"));
	CHECK(!table_ok("d\xc3\xa9j\xc3\xa0"));   /* non-ASCII letters are not plain identifiers */
	CHECK(!table_ok("docs "));
	CHECK(!table_ok("do cs"));
}

static bool url_ok(const char *u, const char *must_not_contain)
{
	struct cw_docstore_error err = {0};
	int rc = cw_docstore_check_url(u, &err);
	if (rc != CW_DOCSTORE_OK && must_not_contain)
		CHECK(strstr(err.msg, must_not_contain) == NULL);
	return rc == CW_DOCSTORE_OK;
}

static void test_urls(void)
{
	CHECK(url_ok("postgresql://u:p@127.0.0.1:5432/db", NULL));
	CHECK(url_ok("postgres://127.0.0.1/db", NULL));
	CHECK(url_ok("db+postgresql://u@h/db?sslmode=require", NULL));
	CHECK(url_ok("db+postgresql+psycopg2://u@h/db", NULL));
	CHECK(!url_ok("", NULL));
	CHECK(!url_ok(NULL, NULL));
	CHECK(!url_ok("redis://127.0.0.1/0", NULL));
	CHECK(!url_ok("mysql://user:hunter2@h/db", "hunter2"));
	CHECK(!url_ok("mysql://h/db?password=hunter3", "hunter3"));
	CHECK(!url_ok("postgresql:/h/db", NULL));
	CHECK(!url_ok("db+postgresqlx://h/db", NULL));
}

static void test_sha256(void)
{
	char hex[65];
	cw_docstore_sha256((const unsigned char *)"", 0, hex);
	CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	cw_docstore_sha256((const unsigned char *)"abc", 3, hex);
	CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}

int main(void)
{
	test_tables();
	test_urls();
	test_sha256();
	return check_summary();
}
