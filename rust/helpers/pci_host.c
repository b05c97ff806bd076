// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers for rust/kernel/pci_host.rs: the inline functions of
 * <linux/pci.h> (x86's <asm/pci.h>) and <linux/rcupdate.h> that the
 * abstraction calls.
 */

#include <linux/pci.h>
#include <linux/rcupdate.h>

int rust_helper_pci_domain_nr(struct pci_bus *bus)
{
	return pci_domain_nr(bus);
}

void rust_helper_rcu_read_lock(void)
{
	rcu_read_lock();
}

void rust_helper_rcu_read_unlock(void)
{
	rcu_read_unlock();
}
