// SPDX-License-Identifier: GPL-2.0
/* Helpers for rust/kernel/configfs.rs: configfs's inline functions and macros. */

#include <linux/configfs.h>

void rust_helper_pcieoe_configfs_subsystem_init(struct configfs_subsystem *subsys,
						 const char *name,
						 const struct config_item_type *type)
{
	config_group_init_type_name(&subsys->su_group, name, type);
	mutex_init(&subsys->su_mutex);
}

void rust_helper_configfs_add_default_group(struct config_group *new_group,
					    struct config_group *group)
{
	configfs_add_default_group(new_group, group);
}
