/* shape ops. */
#include "../op.h"

const ss_op_def ss_ops_shape[] = {
    {0},
};
