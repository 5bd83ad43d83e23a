#include <mongocrypt/mongocrypt.h>
