/* [alias:NAME] config sections: old task names and signatures onto cworker tasks. */
#ifndef CW_ALIAS_H
#define CW_ALIAS_H

#include "config/config.h"
#include "tasks/registry.h"

/* Register every alias of cfg (after the tasks they point to); CW_EINVAL with err set. */
int cw_aliases_register(struct cw_registry *r, const struct cw_config *cfg, struct cw_error *err);

/* Free what registration allocated (after the registry is gone). */
void cw_aliases_free(void);

#endif
