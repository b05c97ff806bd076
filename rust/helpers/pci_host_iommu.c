// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers for rust/kernel/pci_host/iommu.rs: the inline functions and
 * macros of <linux/mm.h>, <linux/io.h> and <linux/scatterlist.h> that the
 * software IOMMU calls.
 */

#include <linux/io.h>
#include <linux/mm.h>
#include <linux/scatterlist.h>

phys_addr_t rust_helper_pcieoe_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

void *rust_helper_pcieoe_phys_to_virt(phys_addr_t phys)
{
	return phys_to_virt(phys);
}

/*
 * Whether @page is ordinary memory that the kernel's direct map covers:
 * not device memory (ZONE_DEVICE: P2P BARs, persistent memory) and not
 * highmem (none on 64-bit, checked all the same).
 */
bool rust_helper_pcieoe_page_is_dma_ram(struct page *page)
{
	return !is_zone_device_page(page) && !PageHighMem(page);
}

struct page *rust_helper_pcieoe_sg_page(struct scatterlist *sg)
{
	return sg_page(sg);
}
