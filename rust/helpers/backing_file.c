// SPDX-License-Identifier: GPL-2.0
/*
 * Helpers for rust/kernel/backing_file.rs: the inline functions of
 * <linux/fs.h> and <linux/blkdev.h> that the abstraction calls.
 */

#include <linux/blkdev.h>
#include <linux/fs.h>

struct inode *rust_helper_file_inode(const struct file *f)
{
	return file_inode(f);
}

loff_t rust_helper_i_size_read(const struct inode *inode)
{
	return i_size_read(inode);
}

loff_t rust_helper_bdev_nr_bytes(struct block_device *bdev)
{
	return bdev_nr_bytes(bdev);
}

unsigned int rust_helper_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}

unsigned int rust_helper_bdev_physical_block_size(struct block_device *bdev)
{
	return bdev_physical_block_size(bdev);
}

unsigned int rust_helper_bdev_write_zeroes_sectors(struct block_device *bdev)
{
	return bdev_write_zeroes_sectors(bdev);
}
