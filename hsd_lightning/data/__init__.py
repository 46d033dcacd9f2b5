from .datamodule import (
                         DATAMODULES,
                         CNNDMDataModule,
                         CommonGenDataModule,
                         E2EDataModule,
                         HealthCareMagicDataModule,
                         TextGenDataModule,
                         TextPairDataModule,
                         XSumDataModule,
)

__all__ = ["TextGenDataModule", "TextPairDataModule", "E2EDataModule", "CommonGenDataModule", "CNNDMDataModule", "XSumDataModule",
           "HealthCareMagicDataModule", "DATAMODULES"]
