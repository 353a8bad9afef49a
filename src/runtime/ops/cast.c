/* cast ops. */
#include "../op.h"

const ss_op_def ss_ops_cast[] = {
    {0},
};
