/* Unit tests: CLI/env/file layering, validation, hostname expansion, URLs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "util/url.h"

#include "check.h"

static int load(struct cw_config *c, struct cw_error *e, int argc, const char **argv)
{
	return cw_config_load(c, argc, (char **)argv, e);
}

static char *write_file(const char *text)
{
	static char path[] = "/tmp/cw-test-config-XXXXXX";
	strcpy(path, "/tmp/cw-test-config-XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0)
		abort();
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		abort();
	close(fd);
	return path;
}

static void test_defaults(void)
{
	struct cw_config c;
	struct cw_error e = {0};
	const char *argv[] = {"cworker"};
	unsetenv("CELERY_BROKER_URL");
	unsetenv("CELERY_RESULT_BACKEND");
	CHECK(load(&c, &e, 1, argv) == CW_CONFIG_RUN);
	CHECK(!strcmp(c.broker_url, "redis://127.0.0.1:6379/0"));
	CHECK(c.result_backend == NULL);
	CHECK(c.nqueues == 1 && !strcmp(c.queue_list[0], "celery"));
	CHECK(c.prefetch_multiplier == 4);
	CHECK(c.concurrency == sysconf(_SC_NPROCESSORS_ONLN));
	CHECK(c.pool_kind == CW_POOL_PREFORK);
	CHECK(!strncmp(c.hostname, "celery@", 7) && strlen(c.hostname) > 7);
	CHECK(c.result_expires == 86400 && c.visibility_timeout == 3600);
	cw_config_free(&c);
}

static void test_cli(void)
{
	struct cw_config c;
	struct cw_error e = {0};
	const char *argv[] = {"cworker", "worker", "-b", "redis://h:1/2", "-Q", "a, b,a", "-c", "3",
			      "-P", "solo", "-n", "w1@%n.x", "-l", "INFO", "--prefetch-multiplier",
			      "1", "--diagnostic-tasks", "--result-backend", "redis://h:1/3"};
	CHECK(load(&c, &e, sizeof(argv) / sizeof(argv[0]), argv) == CW_CONFIG_RUN);
	CHECK(!strcmp(c.broker_url, "redis://h:1/2"));
	CHECK(c.nqueues == 2 && !strcmp(c.queue_list[0], "a") && !strcmp(c.queue_list[1], "b"));
	CHECK(c.concurrency == 3 && c.pool_kind == CW_POOL_SOLO && c.prefetch_multiplier == 1);
	CHECK(!strncmp(c.hostname, "w1@", 3) && strstr(c.hostname, ".x"));
	CHECK(c.diagnostic_tasks && !strcmp(c.result_backend, "redis://h:1/3"));
	cw_config_free(&c);
}

static void expect_usage_error(int argc, const char **argv, const char *needle)
{
	struct cw_config c;
	struct cw_error e = {0};
	int rc = load(&c, &e, argc, argv);
	CHECK(rc < 0);
	CHECK(strstr(e.msg, needle) != NULL);
	if (!strstr(e.msg, needle))
		fprintf(stderr, "  message was: %s (wanted '%s')\n", e.msg, needle);
	CHECK(strchr(e.msg, '\n') == NULL);
	cw_config_free(&c);
}

static void test_errors(void)
{
	const char *a1[] = {"cworker", "--bogus"};
	expect_usage_error(2, a1, "--bogus");
	const char *a2[] = {"cworker", "-c", "0"};
	expect_usage_error(3, a2, "--concurrency");
	const char *a3[] = {"cworker", "-c", "x"};
	expect_usage_error(3, a3, "not an integer");
	const char *a4[] = {"cworker", "-P", "thread"};
	expect_usage_error(3, a4, "prefork, solo");
	const char *a5[] = {"cworker", "--prefetch-multiplier", "-1"};
	expect_usage_error(3, a5, "out of range");
	const char *a6[] = {"cworker", "-b", "kafka://u:pw@h//"};
	expect_usage_error(3, a6, "unsupported URL");
#ifdef CW_HAVE_AMQP
	const char *a6b[] = {"cworker", "-b", "redis://h/0", "--result-backend", "rpc://"};
	expect_usage_error(5, a6b, "rpc:// needs an amqp:// broker");
	const char *a6c[] = {"cworker", "-b", "amqps://h//", "--broker-ssl-cert-reqs", "MAYBE"};
	expect_usage_error(5, a6c, "cert_reqs");
	struct cw_config ca;
	struct cw_error ea = {0};
	const char *a6d[] = {"cworker", "-b", "amqp://u:p@h:5673/v", "--result-backend", "rpc://",
			     "--broker-heartbeat", "30", "--task-queue-max-priority", "10"};
	CHECK(load(&ca, &ea, 9, a6d) == 0);
	CHECK(ca.broker_heartbeat == 30 && ca.queue_max_priority == 10);
	CHECK(!strcmp(ca.broker_ssl_reqs, "CERT_REQUIRED") && !ca.broker_ssl);
	cw_config_free(&ca);
#endif
	const char *a7[] = {"cworker", "-l", "loud"};
	expect_usage_error(3, a7, "--loglevel");
	const char *a8[] = {"cworker", "-Q", " , "};
	expect_usage_error(3, a8, "no queue");
	const char *a9[] = {"cworker", "-b"};
	expect_usage_error(2, a9, "missing value");
	const char *a10[] = {"cworker", "stray"};
	expect_usage_error(2, a10, "unexpected argument");
	const char *a11[] = {"cworker", "--visibility-timeout", "-3"};
	expect_usage_error(3, a11, "seconds");

	/* the password never shows in the error */
	struct cw_config c;
	struct cw_error e = {0};
	const char *a12[] = {"cworker", "-b", "kafka://user:s3cr3t@h//"};
	CHECK(load(&c, &e, 3, a12) < 0);
	CHECK(strstr(e.msg, "s3cr3t") == NULL);
	cw_config_free(&c);
}

static void test_precedence(void)
{
	struct cw_config c;
	struct cw_error e = {0};
	char *path = write_file("# comment\nbroker_url = redis://file:1/0\n"
				"worker_concurrency = 7\nresult_backend = 'redis://file:1/1'\n"
				"worker_queues = fq\nresult_extended = yes\n"
				"broker_transport_options.visibility_timeout = 12.5\n");
	const char *argv[] = {"cworker", "--config", path};
	unsetenv("CELERY_BROKER_URL");
	CHECK(load(&c, &e, 3, argv) == CW_CONFIG_RUN);
	CHECK(!strcmp(c.broker_url, "redis://file:1/0") && c.concurrency == 7);
	CHECK(!strcmp(c.result_backend, "redis://file:1/1") && c.result_extended);
	CHECK(!strcmp(c.queue_list[0], "fq") && c.visibility_timeout == 12.5);
	cw_config_free(&c);

	setenv("CELERY_BROKER_URL", "redis://env:1/0", 1);
	CHECK(load(&c, &e, 3, argv) == CW_CONFIG_RUN);
	CHECK(!strcmp(c.broker_url, "redis://env:1/0"));
	cw_config_free(&c);

	const char *argv2[] = {"cworker", "--config", path, "-b", "redis://cli:1/0"};
	CHECK(load(&c, &e, 5, argv2) == CW_CONFIG_RUN);
	CHECK(!strcmp(c.broker_url, "redis://cli:1/0"));
	cw_config_free(&c);
	unsetenv("CELERY_BROKER_URL");
	unlink(path);

	path = write_file("no_such_setting = 1\n");
	const char *argv3[] = {"cworker", "--config", path};
	CHECK(load(&c, &e, 3, argv3) < 0 && strstr(e.msg, "unknown setting 'no_such_setting'"));
	cw_config_free(&c);
	unlink(path);

	const char *argv4[] = {"cworker", "--config", "/nonexistent/cw.conf"};
	CHECK(load(&c, &e, 3, argv4) < 0 && strstr(e.msg, "cannot open"));
	cw_config_free(&c);
}

static void test_hostname(void)
{
	char *h = cw_config_expand_hostname("celery@%h", "box.example.com");
	CHECK(!strcmp(h, "celery@box.example.com"));
	free(h);
	h = cw_config_expand_hostname("%n-%d-%%", "box.example.com");
	CHECK(!strcmp(h, "box-example.com-%"));
	free(h);
	h = cw_config_expand_hostname("w@%n%d", "box");
	CHECK(!strcmp(h, "w@box"));
	free(h);
}

static void test_url(void)
{
	struct cw_url u;
	struct cw_error e = {0};
	char out[256];
	CHECK(cw_url_parse("redis://:p%40ss@127.0.0.1:6380/3", &u, &e) == CW_OK);
	CHECK(!strcmp(u.scheme, "redis") && !strcmp(u.host, "127.0.0.1") && u.port == 6380);
	CHECK(!strcmp(u.password, "p@ss") && u.db == 3 && u.user[0] == '\0');
	CHECK(cw_url_parse("redis://user:pw@[::1]:7000/0", &u, &e) == CW_OK);
	CHECK(!strcmp(u.host, "::1") && u.port == 7000 && !strcmp(u.user, "user"));
	CHECK(cw_url_parse("redis://localhost", &u, &e) == CW_OK && u.port == 0 && u.db == 0);
	CHECK(cw_url_parse("redis://h:99999/0", &u, &e) != CW_OK);
	CHECK(cw_url_parse("redis://h:1/x", &u, &e) != CW_OK);
	CHECK(cw_url_parse("nonsense", &u, &e) != CW_OK);
	cw_url_redact("redis://:s3cr3t@h:1/0", out, sizeof(out));
	CHECK(!strcmp(out, "redis://:**@h:1/0"));
	cw_url_redact("redis://u:s3cr3t@h/0", out, sizeof(out));
	CHECK(!strcmp(out, "redis://u:**@h/0"));
	cw_url_redact("redis://h:1/0", out, sizeof(out));
	CHECK(!strcmp(out, "redis://h:1/0"));
	/* a failover list: every password masked */
	cw_url_redact("amqp://u:p1@a:5672//;amqp://u:p2@b//;amqp://c", out, sizeof(out));
	CHECK(!strcmp(out, "amqp://u:**@a:5672//;amqp://u:**@b//;amqp://c"));
}

static void test_rates(void)
{
	double r;
	CHECK(cw_config_parse_rate("10/s", &r) == CW_OK && r == 10);
	CHECK(cw_config_parse_rate("120/m", &r) == CW_OK && r == 2);
	CHECK(cw_config_parse_rate("1800/h", &r) == CW_OK && r == 0.5);
	CHECK(cw_config_parse_rate("2.5", &r) == CW_OK && r == 2.5);
	CHECK(cw_config_parse_rate("0", &r) == CW_OK && r == 0);
	CHECK(cw_config_parse_rate("", &r) == CW_OK && r == 0);
	CHECK(cw_config_parse_rate("10/d", &r) != CW_OK);
	CHECK(cw_config_parse_rate("10/sec", &r) != CW_OK);
	CHECK(cw_config_parse_rate("-1/s", &r) != CW_OK);
	CHECK(cw_config_parse_rate("fast", &r) != CW_OK);
	CHECK(cw_config_parse_rate("nan/s", &r) != CW_OK);
}

int main(void)
{
	test_rates();
	test_defaults();
	test_cli();
	test_errors();
	test_precedence();
	test_hostname();
	test_url();
	return check_summary();
}
