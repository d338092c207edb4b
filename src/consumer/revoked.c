/*
 * Revoked task ids: a chained hash table keyed by id for O(1) lookups, and
 * a doubly linked list through the same nodes in insertion order (a refresh
 * moves the node to the tail), so the head is the oldest entry and maxlen
 * eviction is O(1).  purge() walks the whole list rather than stopping at
 * the first live entry: a wall clock that stepped back can leave the list
 * out of time order.
 */
#include "consumer/revoked.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIN_BUCKETS 16
#define FILE_VERSION 1

struct node {
	struct node *prev, *next; /* insertion order, head = oldest */
	struct node *hnext;       /* hash chain */
	uint64_t hash;
	double added;
	size_t len;
	char id[]; /* NUL-terminated */
};

struct cw_revoked {
	size_t maxlen; /* 0 = no limit */
	double expires; /* <= 0: never */
	size_t count;
	size_t nbuckets; /* power of two */
	struct node **buckets;
	struct node *head, *tail;
};

/* FNV-1a with a final mix so the low bits used for the bucket index vary. */
static uint64_t hash_id(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

/*
 * Strict UTF-8, the rules jansson applies when it dumps a string (no
 * overlong forms, no surrogates, nothing above U+10FFFF), so every id that
 * add() accepts can be saved.
 */
static bool utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		size_t n;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 4;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n;
	}
	return true;
}

/* Length of a valid id, or 0 when id is NULL, empty, too long or not UTF-8. */
static size_t id_len(const char *id)
{
	size_t len;

	if (!id)
		return 0;
	len = strnlen(id, CW_REVOKED_ID_MAX + 1);
	if (len > CW_REVOKED_ID_MAX || !utf8_valid((const unsigned char *)id, len))
		return 0;
	return len;
}

static bool expired(const struct cw_revoked *r, double added, double now)
{
	return r->expires > 0 && now - added > r->expires;
}

static struct node *find(const struct cw_revoked *r, const char *id, size_t len, uint64_t hash)
{
	struct node *n = r->buckets[hash & (r->nbuckets - 1)];

	for (; n; n = n->hnext) {
		if (n->hash == hash && n->len == len && !memcmp(n->id, id, len))
			return n;
	}
	return NULL;
}

static void list_unlink(struct cw_revoked *r, struct node *n)
{
	if (n->prev)
		n->prev->next = n->next;
	else
		r->head = n->next;
	if (n->next)
		n->next->prev = n->prev;
	else
		r->tail = n->prev;
	n->prev = n->next = NULL;
}

static void list_append(struct cw_revoked *r, struct node *n)
{
	n->prev = r->tail;
	n->next = NULL;
	if (r->tail)
		r->tail->next = n;
	else
		r->head = n;
	r->tail = n;
}

/* Unlink n from its chain and the list, and free it. */
static void remove_node(struct cw_revoked *r, struct node *n)
{
	struct node **pp = &r->buckets[n->hash & (r->nbuckets - 1)];

	while (*pp != n)
		pp = &(*pp)->hnext;
	*pp = n->hnext;
	list_unlink(r, n);
	free(n);
	r->count--;
}

/*
 * Double the bucket array.  On ENOMEM the table keeps working with longer
 * chains, so the failure is not reported.
 */
static void grow(struct cw_revoked *r)
{
	size_t nb = r->nbuckets * 2;
	struct node **b;

	if (nb < r->nbuckets || nb > SIZE_MAX / sizeof(struct node *))
		return;
	b = calloc(nb, sizeof(struct node *));
	if (!b)
		return;
	for (size_t i = 0; i < r->nbuckets; i++) {
		struct node *n = r->buckets[i], *next;

		for (; n; n = next) {
			next = n->hnext;
			n->hnext = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	}
	free(r->buckets);
	r->buckets = b;
	r->nbuckets = nb;
}

/* Add or refresh a validated id; refreshing makes it the newest entry. */
static int insert(struct cw_revoked *r, const char *id, size_t len, uint64_t hash, double added)
{
	struct node *n = find(r, id, len, hash);

	if (n) {
		n->added = added;
		list_unlink(r, n);
		list_append(r, n);
		return CW_OK;
	}
	n = malloc(offsetof(struct node, id) + len + 1);
	if (!n)
		return CW_ENOMEM;
	n->hash = hash;
	n->added = added;
	n->len = len;
	memcpy(n->id, id, len);
	n->id[len] = '\0';
	if (r->count >= r->nbuckets)
		grow(r);
	n->hnext = r->buckets[hash & (r->nbuckets - 1)];
	r->buckets[hash & (r->nbuckets - 1)] = n;
	list_append(r, n);
	r->count++;
	while (r->maxlen && r->count > r->maxlen)
		remove_node(r, r->head);
	return CW_OK;
}

struct cw_revoked *cw_revoked_new(size_t maxlen, double expires)
{
	struct cw_revoked *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->buckets = calloc(MIN_BUCKETS, sizeof(struct node *));
	if (!r->buckets) {
		free(r);
		return NULL;
	}
	r->nbuckets = MIN_BUCKETS;
	r->maxlen = maxlen;
	r->expires = expires > 0 ? expires : 0;
	return r;
}

void cw_revoked_free(struct cw_revoked *r)
{
	struct node *n, *next;

	if (!r)
		return;
	for (n = r->head; n; n = next) {
		next = n->next;
		free(n);
	}
	free(r->buckets);
	free(r);
}

int cw_revoked_add(struct cw_revoked *r, const char *id, double now)
{
	size_t len = id_len(id);

	if (!len || !isfinite(now))
		return CW_EINVAL;
	return insert(r, id, len, hash_id(id, len), now);
}

bool cw_revoked_has(const struct cw_revoked *r, const char *id, double now)
{
	size_t len;
	const struct node *n;

	if (!id)
		return false;
	len = strnlen(id, CW_REVOKED_ID_MAX + 1);
	if (!len || len > CW_REVOKED_ID_MAX)
		return false;
	n = find(r, id, len, hash_id(id, len));
	return n && !expired(r, n->added, now);
}

bool cw_revoked_discard(struct cw_revoked *r, const char *id)
{
	size_t len;
	struct node *n;

	if (!id)
		return false;
	len = strnlen(id, CW_REVOKED_ID_MAX + 1);
	if (!len || len > CW_REVOKED_ID_MAX)
		return false;
	n = find(r, id, len, hash_id(id, len));
	if (!n)
		return false;
	remove_node(r, n);
	return true;
}

void cw_revoked_purge(struct cw_revoked *r, double now)
{
	struct node *n, *next;

	if (r->expires <= 0)
		return;
	for (n = r->head; n; n = next) {
		next = n->next;
		if (expired(r, n->added, now))
			remove_node(r, n);
	}
}

size_t cw_revoked_count(const struct cw_revoked *r)
{
	return r->count;
}

void cw_revoked_each(const struct cw_revoked *r,
		     bool (*fn)(void *arg, const char *id, double added), void *arg)
{
	for (const struct node *n = r->head; n; n = n->next) {
		if (!fn(arg, n->id, n->added))
			return;
	}
}

/* ---- persistence ---- */

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t w = write(fd, buf, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

static json_t *to_json(const struct cw_revoked *r, double now)
{
	json_t *root = json_object(), *list = json_array();

	if (!root || !list || json_object_set_new(root, "version", json_integer(FILE_VERSION)) ||
	    json_object_set(root, "revoked", list))
		goto fail;
	for (const struct node *n = r->head; n; n = n->next) {
		json_t *e;

		if (expired(r, n->added, now))
			continue;
		e = json_pack("[s#f]", n->id, (int)n->len, n->added);
		if (!e || json_array_append_new(list, e))
			goto fail;
	}
	json_decref(list);
	return root;
fail:
	json_decref(list);
	json_decref(root);
	return NULL;
}

/* fsync the directory holding path so the rename itself is durable. */
static void sync_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd;

	if (!slash) {
		dir = strdup(".");
	} else {
		size_t n = slash == path ? 1 : (size_t)(slash - path);

		dir = strndup(path, n);
	}
	if (!dir)
		return;
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd < 0)
		return;
	(void)fsync(fd);
	close(fd);
}

int cw_revoked_save(const struct cw_revoked *r, const char *path, double now,
		    struct cw_error *err)
{
	json_t *root;
	char *text, *tmp;
	size_t tmplen;
	int fd, rc = CW_OK;

	root = to_json(r, now);
	if (!root) {
		cw_error_set(err, CW_ENOMEM, "%s: out of memory encoding revoked ids", path);
		return CW_ENOMEM;
	}
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!text) {
		cw_error_set(err, CW_ENOMEM, "%s: out of memory encoding revoked ids", path);
		return CW_ENOMEM;
	}
	tmplen = strlen(path) + 32;
	tmp = malloc(tmplen);
	if (!tmp) {
		free(text);
		cw_error_set(err, CW_ENOMEM, "%s: out of memory", path);
		return CW_ENOMEM;
	}
	if (snprintf(tmp, tmplen, "%s.tmp.%ld", path, (long)getpid()) >= (int)tmplen) {
		free(tmp);
		free(text);
		cw_error_set(err, CW_EIO, "%s: path too long", path);
		return CW_EIO;
	}

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		cw_error_set(err, CW_EIO, "%s: cannot create: %s", tmp, strerror(errno));
		free(tmp);
		free(text);
		return CW_EIO;
	}
	if (write_all(fd, text, strlen(text)) || write_all(fd, "\n", 1)) {
		cw_error_set(err, CW_EIO, "%s: write failed: %s", tmp, strerror(errno));
		rc = CW_EIO;
	} else if (fsync(fd)) {
		cw_error_set(err, CW_EIO, "%s: fsync failed: %s", tmp, strerror(errno));
		rc = CW_EIO;
	}
	if (close(fd) && rc == CW_OK) {
		cw_error_set(err, CW_EIO, "%s: close failed: %s", tmp, strerror(errno));
		rc = CW_EIO;
	}
	if (rc == CW_OK && rename(tmp, path)) {
		cw_error_set(err, CW_EIO, "%s: cannot rename %s over it: %s", path, tmp,
			     strerror(errno));
		rc = CW_EIO;
	}
	if (rc == CW_OK)
		sync_dir(path);
	else
		unlink(tmp);
	free(tmp);
	free(text);
	return rc;
}

/*
 * Read the whole file.  *buf = NULL with CW_OK when it does not exist.
 * Failures fill err and return CW_EIO or CW_ENOMEM.
 */
static int read_file(const char *path, char **buf, size_t *len, struct cw_error *err)
{
	struct stat st;
	char *p = NULL;
	size_t n = 0, cap = 0;
	int fd;

	*buf = NULL;
	*len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return CW_OK;
		cw_error_set(err, CW_EIO, "%s: cannot open: %s", path, strerror(errno));
		return CW_EIO;
	}
	if (fstat(fd, &st)) {
		cw_error_set(err, CW_EIO, "%s: cannot stat: %s", path, strerror(errno));
		close(fd);
		return CW_EIO;
	}
	if (!S_ISREG(st.st_mode)) {
		cw_error_set(err, CW_EIO, "%s: not a regular file", path);
		close(fd);
		return CW_EIO;
	}
	for (;;) {
		ssize_t got;

		if (n == cap) {
			size_t ncap = cap ? cap * 2 : (size_t)st.st_size + 1;
			char *q = ncap > cap ? realloc(p, ncap) : NULL;

			if (!q) {
				free(p);
				close(fd);
				cw_error_set(err, CW_ENOMEM, "%s: out of memory reading", path);
				return CW_ENOMEM;
			}
			p = q;
			cap = ncap;
		}
		got = read(fd, p + n, cap - n);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			cw_error_set(err, CW_EIO, "%s: read failed: %s", path, strerror(errno));
			free(p);
			close(fd);
			return CW_EIO;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	close(fd);
	*buf = p;
	*len = n;
	return CW_OK;
}

/* Check one ["id", added] entry; fills err and returns CW_EFORMAT if bad. */
static int check_entry(const json_t *e, size_t i, const char *path, struct cw_error *err)
{
	const json_t *id, *added;
	size_t len;

	if (!json_is_array(e) || json_array_size(e) != 2) {
		cw_error_set(err, CW_EFORMAT, "%s: revoked[%zu] is not an [\"id\", added] pair",
			     path, i);
		return CW_EFORMAT;
	}
	id = json_array_get(e, 0);
	added = json_array_get(e, 1);
	if (!json_is_string(id)) {
		cw_error_set(err, CW_EFORMAT, "%s: revoked[%zu]: id is not a string", path, i);
		return CW_EFORMAT;
	}
	len = json_string_length(id);
	if (!len || len > CW_REVOKED_ID_MAX || strlen(json_string_value(id)) != len) {
		cw_error_set(err, CW_EFORMAT, "%s: revoked[%zu]: id must be 1..%d bytes", path, i,
			     CW_REVOKED_ID_MAX);
		return CW_EFORMAT;
	}
	if (!json_is_number(added) || !isfinite(json_number_value(added))) {
		cw_error_set(err, CW_EFORMAT, "%s: revoked[%zu]: added time is not a number", path,
			     i);
		return CW_EFORMAT;
	}
	return CW_OK;
}

/* Parse and check the whole document; returns the "revoked" array (borrowed). */
static int parse(const char *path, const char *buf, size_t len, json_t **rootp, json_t **listp,
		 struct cw_error *err)
{
	json_error_t jerr;
	json_t *root, *ver, *list;
	int rc;

	root = json_loadb(buf, len, 0, &jerr);
	if (!root) {
		if (json_error_code(&jerr) == json_error_out_of_memory) {
			cw_error_set(err, CW_ENOMEM, "%s: out of memory parsing", path);
			return CW_ENOMEM;
		}
		cw_error_set(err, CW_EFORMAT, "%s: invalid JSON at line %d: %s", path, jerr.line,
			     jerr.text);
		return CW_EFORMAT;
	}
	if (!json_is_object(root)) {
		cw_error_set(err, CW_EFORMAT, "%s: not a JSON object", path);
		goto bad;
	}
	ver = json_object_get(root, "version");
	if (!json_is_integer(ver) || json_integer_value(ver) != FILE_VERSION) {
		cw_error_set(err, CW_EFORMAT, "%s: \"version\" is missing or not %d", path,
			     FILE_VERSION);
		goto bad;
	}
	list = json_object_get(root, "revoked");
	if (!json_is_array(list)) {
		cw_error_set(err, CW_EFORMAT, "%s: \"revoked\" is missing or not an array", path);
		goto bad;
	}
	for (size_t i = 0; i < json_array_size(list); i++) {
		rc = check_entry(json_array_get(list, i), i, path, err);
		if (rc)
			goto bad;
	}
	*rootp = root;
	*listp = list;
	return CW_OK;
bad:
	json_decref(root);
	return CW_EFORMAT;
}

struct item {
	const char *id;
	size_t len, seq;
	uint64_t hash;
	double added;
};

static int item_cmp(const void *a, const void *b)
{
	const struct item *x = a, *y = b;

	if (x->added != y->added)
		return x->added < y->added ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * Put r's live entries and the file's into dst in time order (ties: r's
 * first, then file order), so maxlen drops the oldest of both and an id in
 * both ends up with its newer time.
 */
static int merge(struct cw_revoked *dst, const struct cw_revoked *r, const json_t *list,
		 double now)
{
	size_t size = json_array_size(list), n = 0, total = r->count + size;
	struct item *items;
	int rc = CW_OK;

	if (total < size || total > SIZE_MAX / sizeof(*items))
		return CW_ENOMEM;
	items = malloc((total ? total : 1) * sizeof(*items));
	if (!items)
		return CW_ENOMEM;
	for (const struct node *p = r->head; p; p = p->next) {
		if (expired(r, p->added, now))
			continue;
		items[n] = (struct item){p->id, p->len, n, p->hash, p->added};
		n++;
	}
	for (size_t i = 0; i < size; i++) {
		const json_t *e = json_array_get(list, i), *id = json_array_get(e, 0);
		const char *s = json_string_value(id);
		size_t len = json_string_length(id);
		double added = json_number_value(json_array_get(e, 1));

		if (expired(r, added, now))
			continue;
		items[n] = (struct item){s, len, n, hash_id(s, len), added};
		n++;
	}
	if (n > 1)
		qsort(items, n, sizeof(*items), item_cmp);
	for (size_t i = 0; i < n && rc == CW_OK; i++)
		rc = insert(dst, items[i].id, items[i].len, items[i].hash, items[i].added);
	free(items);
	return rc;
}

int cw_revoked_load(struct cw_revoked *r, const char *path, double now, struct cw_error *err)
{
	struct cw_revoked *dst, swap;
	json_t *root, *list;
	char *buf;
	size_t len;
	int rc;

	rc = read_file(path, &buf, &len, err);
	if (rc || !buf)
		return rc;
	rc = parse(path, buf, len, &root, &list, err);
	free(buf);
	if (rc)
		return rc;
	dst = cw_revoked_new(r->maxlen, r->expires);
	rc = dst ? merge(dst, r, list, now) : CW_ENOMEM;
	json_decref(root);
	if (rc) {
		cw_revoked_free(dst);
		cw_error_set(err, rc, "%s: out of memory loading revoked ids", path);
		return rc;
	}
	swap = *r;
	*r = *dst;
	*dst = swap;
	cw_revoked_free(dst);
	return CW_OK;
}
