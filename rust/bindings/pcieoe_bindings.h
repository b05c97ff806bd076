/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Headers the pcieoe abstractions need beyond 6.12's bindings_helper.h.
 * Included at the end of rust/bindings/bindings_helper.h by
 * scripts/kernel-additions.
 */
#include <linux/moduleparam.h>
