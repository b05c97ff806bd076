// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers for rust/kernel/pci_driver.rs: the inline functions of
 * <linux/pci.h> that the abstraction calls. (pci_domain_nr() is in
 * pci_host.c.)
 */

#include <linux/pci.h>

void *rust_helper_pci_get_drvdata(struct pci_dev *pdev)
{
	return pci_get_drvdata(pdev);
}

void rust_helper_pci_set_drvdata(struct pci_dev *pdev, void *data)
{
	pci_set_drvdata(pdev, data);
}

const char *rust_helper_pci_name(const struct pci_dev *pdev)
{
	return pci_name(pdev);
}
