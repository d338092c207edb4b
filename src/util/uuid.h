#ifndef CW_UUID_H
#define CW_UUID_H
/* Random RFC 4122 version-4 UUID text, like Python's str(uuid.uuid4()). */
void cw_uuid4(char out[37]);
#endif
