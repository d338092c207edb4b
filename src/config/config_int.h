/*
 * Private to src/config: the option table and the helpers its three files
 * share.  options.c holds the table (one row per setting: config key, flag,
 * environment variable, type, default, help); file.c reads the config file
 * and its [task:], [alias:] and [module:] sections; config.c layers defaults,
 * file, environment and flags, checks the result and prints it.
 */
#ifndef CW_CONFIG_INT_H
#define CW_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "util/err.h"

enum opt_type { T_STR, T_LONG, T_SECONDS, T_BOOL, T_FLAG_ACTION };

struct opt {
	const char *key;      /* config-file key (Celery setting name) */
	const char *lflag;    /* long flag without dashes */
	char sflag;           /* short flag or 0 */
	const char *env;      /* environment variable or NULL */
	enum opt_type type;
	size_t off;           /* offset in struct cw_config */
	const char *def;      /* default as text (NULL = none) */
	long min, max;        /* range for T_LONG */
	bool secret;          /* value may hold credentials */
	const char *help;
};

#define OFF(f) offsetof(struct cw_config, f)

/* Room for the table in fixed-size arrays (getopt's); options.c checks it at compile time. */
#define CW_CONFIG_MAX_OPTS 128

extern const struct opt cw_config_opts[];
extern const size_t cw_config_nopts;

/* Where each setting's value came from, for --print-config. */
struct origin {
	const char *kind;     /* "default", "file", "env", "flag" or NULL (unset) */
	int line;             /* file: line number */
};

/* Apply one textual value to its field; src is "cli", "env", "file" or "default". */
int cw_config_apply(struct cw_config *c, const struct opt *o, const char *val, const char *src,
		    struct cw_error *err);
int cw_config_parse_bool(const char *val, bool *out);
/* s without leading and trailing blanks (in place). */
char *cw_config_trim(char *s);
/* Read the config file into c, noting in orig where each setting came from. */
int cw_config_load_file(struct cw_config *c, const char *path, struct origin *orig,
			struct cw_error *err);

#endif
