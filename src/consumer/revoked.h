/*
 * The set of revoked task ids, as Celery's LimitedSet behind
 * worker.state.revoked (maxlen REVOKES_MAX = 50000, expires
 * REVOKE_EXPIRES = 10800 s).  Each id carries the wall-clock time (epoch
 * seconds) it was added; adding it again refreshes that time and makes it
 * the newest entry.  An entry is expired when now - added > expires: has()
 * reports it absent at once, purge() frees it.  When an add would exceed
 * maxlen, the oldest entries are dropped first.  save()/load() keep the set
 * in a JSON file (--statedb) so revokes survive a restart.
 *
 * add/has/discard are O(1).  Not thread-safe.
 */
#ifndef CW_REVOKED_H
#define CW_REVOKED_H

#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

#define CW_REVOKED_ID_MAX 255 /* longest id in bytes */

struct cw_revoked;

/* maxlen 0: no limit; expires<=0: never expire; NULL on ENOMEM */
struct cw_revoked *cw_revoked_new(size_t maxlen, double expires);
void cw_revoked_free(struct cw_revoked *r);

/*
 * Add id (or refresh it) at time now.  CW_OK, CW_ENOMEM, CW_EINVAL (NULL/empty
 * id, longer than 255 bytes or not valid UTF-8; now not finite).
 */
int cw_revoked_add(struct cw_revoked *r, const char *id, double now) CW_MUST_CHECK;
/* Is id in the set and not expired at now?  Does not modify the set. */
bool cw_revoked_has(const struct cw_revoked *r, const char *id, double now);
/* Remove id; true if it was there (expired or not). */
bool cw_revoked_discard(struct cw_revoked *r, const char *id);
/* Drop expired entries. */
void cw_revoked_purge(struct cw_revoked *r, double now);
/* Number of entries: live + not yet purged. */
size_t cw_revoked_count(const struct cw_revoked *r);

/*
 * Calls fn for each entry oldest first (after purging is the caller's job);
 * stops when fn returns false.  fn must not modify the set.
 */
void cw_revoked_each(const struct cw_revoked *r,
		     bool (*fn)(void *arg, const char *id, double added), void *arg);

/*
 * Atomic save: write path.tmp.<pid>, fsync, rename over path.  Format:
 * JSON {"version":1,"revoked":[["id",added_epoch],...]} oldest first;
 * expired entries left out.  CW_OK, CW_ENOMEM, CW_EIO (err->msg says why).
 */
int cw_revoked_save(const struct cw_revoked *r, const char *path, double now,
		    struct cw_error *err) CW_MUST_CHECK;

/*
 * Load entries from path into r, merged with what r holds by time (an id in
 * both keeps the newer time), keeping the maxlen/expires rules; expired
 * entries are left out.  Missing file = CW_OK with nothing added.
 * Unreadable/corrupt/wrong shape (also one bad entry): CW_EIO or CW_EFORMAT
 * with err->msg saying what is wrong and the path; CW_ENOMEM.  On any error
 * r is left unchanged.
 */
int cw_revoked_load(struct cw_revoked *r, const char *path, double now,
		    struct cw_error *err) CW_MUST_CHECK;

#endif
