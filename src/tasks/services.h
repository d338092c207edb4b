/* The worker's services to tasks (storage), configured once in the master before fork. */
#ifndef CW_TASKS_SERVICES_H
#define CW_TASKS_SERVICES_H

#include "config/config.h"

/* Storage roots, limits and S3 settings from the configuration; CW_OK or CW_ENOMEM. */
int cw_services_configure(const struct cw_config *cfg);
void cw_services_free(void);

#endif
